"""The `tolk` command: run the service on one machine, translate a file."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from app.access import KEY_FILE, digest, new_key, read_key_file
from app.client import TolkClientError
from app.launcher import Launcher, LaunchError
from app.translate_file import TranslateOptions, translate_file

cli = typer.Typer(
    help="Tolk: live speech-to-speech translation on Ray Serve.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

_DEFAULT_URL = "http://127.0.0.1:8000"
_DEFAULT_DATA_DIR = Path(".tolk")

ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        envvar="TOLK_API_KEY",
        show_envvar=True,
        help="API key for creating sessions; unset: the one `tolk up` keeps in "
        "its data folder (TOLK_DATA_DIR, default .tolk).",
    ),
]


def _api_key(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    data_dir = Path(os.environ.get("TOLK_DATA_DIR") or _DEFAULT_DATA_DIR)
    return read_key_file(data_dir / KEY_FILE)


@cli.command()
def up(
    config: Annotated[
        Path, typer.Option(help="Serve config file to deploy.", exists=True)
    ] = Path("serve_config.yaml"),
    redis_url: Annotated[
        str | None,
        typer.Option(
            envvar="TOLK_REDIS_URL",
            help="Redis holding the sessions; when unset an embedded one runs.",
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="TOLK_DATA_DIR", help="Where the embedded Redis keeps data."
        ),
    ] = Path(".tolk"),
    redis_port: Annotated[
        int, typer.Option(help="Port of the embedded Redis (0: any free one).")
    ] = 6380,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TOLK_API_KEY",
            help="An API key the service accepts, besides those in CONFIG; "
            "unset: one kept in DATA_DIR/api-key, made on first start.",
        ),
    ] = None,
) -> None:
    """Start Ray, Serve with CONFIG, and Redis if needed; Ctrl-C stops them all."""
    launcher = Launcher(
        config=config,
        redis_url=redis_url,
        data_dir=data_dir,
        redis_port=redis_port or None,
        api_key=api_key,
        console=console,
    )
    try:
        launcher.run()
    except LaunchError as error:
        console.print(f"[red]tolk up failed:[/red] {error}")
        raise typer.Exit(1) from error


@cli.command()
def translate(
    file: Annotated[Path, typer.Argument(help="wav, flac, ogg or mp3", exists=True)],
    source: Annotated[str, typer.Option("--from", help="Spoken language.")],
    targets: Annotated[list[str], typer.Option("--to", help="Target language(s).")],
    out: Annotated[
        Path, typer.Option(help="WAV of the speech; one file per language if several.")
    ],
    url: Annotated[
        str, typer.Option(envvar="TOLK_URL", help="Service base URL.")
    ] = _DEFAULT_URL,
    fast: Annotated[
        bool, typer.Option(help="Send as fast as the service accepts.")
    ] = False,
    chunk_ms: Annotated[int, typer.Option(help="Audio per message.")] = 100,
    timeout_s: Annotated[float, typer.Option(help="Give up after this long.")] = 600,
    api_key: ApiKeyOption = None,
) -> None:
    """Stream FILE to the service and write the translated speech."""
    options = TranslateOptions(
        api_key=_api_key(api_key),
        file=file,
        source=source,
        targets=targets,
        out=out,
        url=url,
        fast=fast,
        chunk_ms=chunk_ms,
        timeout_s=timeout_s,
    )
    try:
        asyncio.run(translate_file(options, console))
    except (OSError, TimeoutError) as error:
        console.print(f"[red]translation failed:[/red] {error}")
        raise typer.Exit(1) from error


@cli.command()
def bench(
    url: Annotated[
        str, typer.Argument(envvar="TOLK_URL", help="Base URL of a Tolk deployment.")
    ] = _DEFAULT_URL,
    sessions: Annotated[
        str, typer.Option(help="Load levels: concurrent sessions, comma-separated.")
    ] = "1",
    clips_dir: Annotated[
        Path,
        typer.Option(help="Folder of speech clips (and references.tsv).", exists=True),
    ] = Path("../shared/audio/ljspeech"),
    clips_per_session: Annotated[
        int, typer.Option(min=1, help="Clips each session speaks, in turn.")
    ] = 6,
    to: Annotated[list[str], typer.Option(help="Target language(s).")] = ["pt"],  # noqa: B006
    chunk_ms: Annotated[
        int, typer.Option(min=10, help="Audio per message, sent as spoken.")
    ] = 40,
    listeners: Annotated[
        int, typer.Option(min=0, help="Extra listen-only connections per session.")
    ] = 0,
    reconnect_every_s: Annotated[
        float, typer.Option(min=0, help="Drop each speaker's connection this often.")
    ] = 0.0,
    away_s: Annotated[
        float,
        typer.Option(
            min=0, help="Time a dropped listener stays away (speakers: none)."
        ),
    ] = 0.0,
    baseline: Annotated[
        bool, typer.Option(help="Also run the same models in this process.")
    ] = False,
    cooldown_s: Annotated[
        float,
        typer.Option(min=0, help="Idle time after the last level, watching replicas."),
    ] = 0.0,
    poll_replicas_s: Annotated[
        float, typer.Option(min=0, help="How often replicas are counted; 0: never.")
    ] = 2.0,
    config: Annotated[
        Path,
        typer.Option(help="Serve config the baseline takes its models from."),
    ] = Path("serve_config.yaml"),
    peer: Annotated[
        str | None,
        typer.Option(help="WhisperLive server (ws://host:port) to compare with."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json and plots.")] = Path(
        "bench-results"
    ),
    api_key: ApiKeyOption = None,
) -> None:
    """Stream real speech into URL at real-time pace; report delays and capacity."""
    from app.bench.runner import BenchOptions, run_bench

    try:
        levels = [int(level) for level in sessions.split(",") if level.strip()]
    except ValueError as error:
        raise typer.BadParameter("--sessions takes numbers, e.g. 1,2,4") from error
    options = BenchOptions(
        url=url,
        api_key=_api_key(api_key),
        clips_dir=clips_dir,
        out=out,
        sessions=levels,
        clips_per_session=clips_per_session,
        targets=to,
        chunk_ms=chunk_ms,
        listeners=listeners,
        reconnect_every_s=reconnect_every_s,
        away_s=away_s,
        baseline=baseline,
        cooldown_s=cooldown_s,
        poll_replicas_s=poll_replicas_s,
        peer_url=peer,
        config=config,
    )
    try:
        asyncio.run(run_bench(options, console))
    except (OSError, TimeoutError, TolkClientError) as error:
        console.print(f"[red]benchmark failed:[/red] {error}")
        raise typer.Exit(1) from error


@cli.command()
def keygen() -> None:
    """Print a new API key, and the digest to list under the ingress' api_keys."""
    key = new_key()
    typer.echo(f"key:    {key}")
    typer.echo(f"sha256: {digest(key)}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cli()
