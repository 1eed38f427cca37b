"""`tolk up` and `tolk translate` as a user runs them, in real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from app.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[1]
TOLK = Path(sys.executable).with_name("tolk")
_READY_TIMEOUT_S = 600

pytestmark = pytest.mark.service


def _tolk(*arguments: str) -> list[str]:
    return [str(TOLK), *arguments]


def _config_on_free_port(folder: Path) -> tuple[Path, int]:
    """The repository's serve config, with Serve on a free port."""
    port = free_port()
    document = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    document["http_options"]["port"] = port
    config = folder / "serve_config.yaml"
    config.write_text(yaml.safe_dump(document))
    return config, port


@pytest.fixture(scope="module")
def tolk_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`tolk up` with the repository's config on a free port, and its data dir."""
    folder = tmp_path_factory.mktemp("tolk-up")
    config, port = _config_on_free_port(folder)
    log = (folder / "up.log").open("w")
    # Its own Redis, and an API key of its own making, kept in its data folder.
    environment = _without("TOLK_REDIS_URL", "TOLK_API_KEY")
    data = str(folder / "data")
    process = subprocess.Popen(
        _tolk("up", "--config", str(config), "--data-dir", data, "--redis-port", "0"),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=environment,
    )
    try:
        _wait_for(folder / "up.log", "ready at", process)
        yield f"http://127.0.0.1:{port}", folder
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(120)
        log.close()


def _without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        if process.poll() is not None:
            pytest.fail(f"tolk up exited:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"tolk up not ready:\n{log.read_text()[-3000:]}")


def test_tolk_up_announces_languages(tolk_up: tuple[str, Path]) -> None:
    _, folder = tolk_up
    output = (folder / "up.log").read_text()

    assert "embedded Redis at redis://127.0.0.1:" in output
    assert "en→es" in output and "en→pt" in output
    assert (folder / "data" / "redis").is_dir()


def test_tolk_translate_writes_speech_per_language(
    tolk_up: tuple[str, Path], tmp_path: Path
) -> None:
    url, folder = tolk_up
    out = tmp_path / "out.wav"

    result = subprocess.run(
        _tolk(
            "translate",
            str(ROOT / "samples" / "LJ001-0001.wav"),
            *("--from", "en", "--to", "es", "--to", "pt"),
            *("--out", str(out), "--url", url, "--fast"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        # The key that `tolk up` made, found where it keeps it.
        env={**_without("TOLK_API_KEY"), "TOLK_DATA_DIR": str(folder / "data")},
    )

    assert result.returncode == 0, result.stderr
    assert "en: Printing, in the only sense" in result.stdout
    assert "es: " in result.stdout and "pt: " in result.stdout
    for language in ("es", "pt"):
        assert (tmp_path / f"out.{language}.wav").stat().st_size > 100_000


def test_tolk_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    config, _ = _config_on_free_port(tmp_path)
    redis_port = str(free_port())
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            _tolk(
                *("up", "--config", str(config), "--redis-port", redis_port),
                *("--data-dir", str(tmp_path / "data")),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        _wait_for(log_path, "embedded Redis at", process)
        time.sleep(5)
        process.send_signal(signal.SIGINT)
        assert process.wait(120) == 0

    assert "stopping the embedded Redis" in log_path.read_text()
    leftovers = subprocess.run(
        ["pgrep", "-f", f"redis-server 127.0.0.1:{redis_port}"], capture_output=True
    )
    assert leftovers.returncode == 1, leftovers.stdout


def test_tolk_up_keeps_its_api_key_private(tolk_up: tuple[str, Path]) -> None:
    _, folder = tolk_up
    key_path = folder / "data" / "api-key"

    assert key_path.stat().st_mode & 0o777 == 0o600
    key = key_path.read_text().strip()
    assert len(key) >= 40
    # Only the digest goes into the deployed config, and nothing into the log.
    assert key not in (folder / "data" / "serve_config.yaml").read_text()
    assert key not in (folder / "up.log").read_text()
