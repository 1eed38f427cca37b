"""Streams a sound file through a running service and writes what comes back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from app.audio_file import read_pcm16, write_wav
from app.client import SessionOutput, SessionStream, TolkClient, TolkClientError


@dataclass(frozen=True)
class TranslateOptions:
    file: Path
    source: str
    targets: list[str]
    out: Path
    url: str
    api_key: str | None = None
    fast: bool = False
    chunk_ms: int = 100
    timeout_s: float = 600


def output_paths(out: Path, targets: list[str]) -> dict[str, Path]:
    """OUT itself for one language; OUT with the language before the suffix else."""
    if len(targets) == 1:
        return {targets[0]: out}
    return {t: out.with_name(f"{out.stem}.{t}{out.suffix or '.wav'}") for t in targets}


async def translate_file(options: TranslateOptions, console: Console) -> SessionOutput:
    pcm, rate = read_pcm16(options.file)
    async with TolkClient(options.url, api_key=options.api_key) as client:
        try:
            session = await client.create_session(options.source, options.targets, rate)
        except TolkClientError as error:
            console.print(f"[red]{error}[/red]")
            raise SystemExit(2) from error

        async with client.stream(session) as stream:
            console.print(
                f"[dim]session {session.session_id} on replica {stream.replica}, "
                f"{len(pcm) / 2 / rate:.1f} s of audio at {rate} Hz[/dim]"
            )
            sender = asyncio.create_task(_send(stream, pcm, rate, options))
            transcript = await asyncio.wait_for(
                _receive(stream, console), options.timeout_s
            )
            await sender
            if stream.reconnects:
                console.print(f"[dim]resumed {stream.reconnects} times[/dim]")

    for language, path in output_paths(options.out, options.targets).items():
        chunks = list(transcript.speech(language).values())
        if not chunks:
            console.print(f"[yellow]no speech came back in {language}[/yellow]")
            continue
        seconds = write_wav(path, chunks)
        console.print(f"wrote {path} ({language}, {seconds:.1f} s)")
    return transcript


async def _send(
    stream: SessionStream, pcm: bytes, rate: int, options: TranslateOptions
) -> None:
    step = max(2, rate * options.chunk_ms // 1000 * 2)
    started = time.monotonic()
    for offset in range(0, len(pcm), step):
        await stream.send_audio(pcm[offset : offset + step])
        if not options.fast:
            due = started + (offset + step) / 2 / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    await stream.end()


async def _receive(stream: SessionStream, console: Console) -> SessionOutput:
    """Prints what arrives: transcripts on stdout, problems on `console`."""
    stdout = Console(highlight=False, soft_wrap=True)
    transcript = SessionOutput()
    async for message in stream.messages():
        transcript.add(message)
        data = message.data
        if message.type == "partial":
            stdout.print(f"[dim]  … {data['text']}[/dim]")
        elif message.type == "final" and data["text"]:
            stdout.print(f"[bold]{data['language']}:[/bold] {data['text']}")
        elif message.type == "translation":
            stdout.print(f"[green]{data['language']}:[/green] {data['text']}")
        elif message.type in ("stage_error", "error"):
            console.print(
                f"[red]{data.get('code', data.get('stage'))}: {data['message']}[/red]"
            )
        elif message.type == "recovery_impossible":
            console.print(
                "[yellow]some output was lost while disconnected "
                f"({data['reason']})[/yellow]"
            )
        elif message.type == "end_of_stream":
            break
    return transcript
