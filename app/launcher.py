"""`tolk up`: everything the service needs on one machine, started and stopped.

The Serve application runs under `serve run` in a child process, so that Ray
and Serve start and stop exactly as they do for operators who use the Ray CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console

from app.access import KEY_FILE, digest, key_file
from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError

_READY_TIMEOUT_S = 900.0
_STOP_TIMEOUT_S = 60.0


class LaunchError(Exception):
    """The service could not be started."""


class Launcher:
    def __init__(
        self,
        *,
        config: Path,
        redis_url: str | None,
        data_dir: Path,
        redis_port: int | None,
        api_key: str | None,
        console: Console,
    ) -> None:
        self._config = config
        self._redis_url = redis_url
        self._data_dir = data_dir.resolve()
        self._redis_port = redis_port
        self._api_key = api_key
        self._console = console
        self._redis: EmbeddedRedis | None = None
        self._serve: subprocess.Popen[str] | None = None
        self._log: deque[str] = deque(maxlen=40)

    def run(self) -> None:
        """Starts everything, waits for Ctrl-C, stops everything it started."""
        # SIGTERM (systemd, `kill`) stops as Ctrl-C does; and Ctrl-C works even
        # when a parent shell started us with SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            redis_url = self._redis_url or self._start_redis()
            config = self._write_config(redis_url)
            base_url = self._serve_url(config)
            self._start_serve(config)
            languages = self._wait_until_ready(base_url)
            self._announce(base_url, languages)
            self._wait_for_interrupt()
        except KeyboardInterrupt:
            pass
        finally:
            self._stop()

    def _start_redis(self) -> str:
        # Every write reaches the disk before it is acknowledged: a crash of
        # the machine must not cost sessions events their clients have seen.
        self._redis = EmbeddedRedis(
            self._data_dir / "redis", port=self._redis_port, appendfsync="always"
        )
        try:
            self._redis.start()
        except EmbeddedRedisError as error:
            raise LaunchError(str(error)) from error
        self._console.print(f"embedded Redis at {self._redis.url}")
        return self._redis.url

    def _write_config(self, redis_url: str) -> Path:
        document: dict[str, Any] = yaml.safe_load(self._config.read_text())
        self._data_dir.mkdir(parents=True, exist_ok=True)
        key_digest = digest(self._api_key or key_file(self._data_dir / KEY_FILE))
        for application in document.get("applications", []):
            args = application.setdefault("args", {})
            args["redis_url"] = redis_url
            ingress = args.setdefault("ingress", None) or {}
            ingress["api_keys"] = [*ingress.get("api_keys", []), key_digest]
            args["ingress"] = ingress
        derived = self._data_dir / "serve_config.yaml"
        derived.write_text(yaml.safe_dump(document, sort_keys=False))
        return derived

    @staticmethod
    def _serve_url(config: Path) -> str:
        options = yaml.safe_load(config.read_text()).get("http_options", {})
        host = options.get("host", "127.0.0.1")
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{options.get('port', 8000)}"

    def _start_serve(self, config: Path) -> None:
        serve = Path(sys.executable).with_name("serve")
        command = [str(serve), "run", str(config)]
        self._serve = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Ray's processes need no key: the config holds only its digest.
            env={
                **{k: v for k, v in os.environ.items() if k != "TOLK_API_KEY"},
                "PYTHONUNBUFFERED": "1",
            },
            # Its own process group: Ctrl-C reaches it through us, in order.
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        threading.Thread(target=self._collect_log, daemon=True).start()

    def _collect_log(self) -> None:
        assert self._serve is not None and self._serve.stdout is not None
        with (self._data_dir / "serve.log").open("w") as log:
            for line in self._serve.stdout:
                log.write(line)
                log.flush()
                self._log.append(line.rstrip())

    def _wait_until_ready(self, base_url: str) -> dict[str, Any]:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        with self._console.status("starting Ray and loading models") as status:
            while time.monotonic() < deadline:
                if self._serve is None or self._serve.poll() is not None:
                    tail = "\n".join(list(self._log)[-15:])
                    raise LaunchError(f"serve run exited:\n{tail}")
                languages = _languages(base_url)
                if languages is not None:
                    return languages
                if self._log:
                    status.update(f"loading: {_shorten(self._log[-1])}")
                time.sleep(1.0)
        raise LaunchError(f"not ready after {_READY_TIMEOUT_S:.0f} s")

    def _announce(self, base_url: str, languages: dict[str, Any]) -> None:
        pairs = " ".join(f"{s}→{t}" for s, t in languages.get("pairs", []))
        self._console.print(f"language pairs: {pairs or 'none'}")
        self._console.print(f"[bold green]Tolk is ready at {base_url}[/bold green]")
        if self._api_key is None:
            self._console.print(
                f"API key: in {self._data_dir / KEY_FILE}, where tolk translate "
                "and tolk bench find it"
            )
        self._console.print(f"logs: {self._data_dir / 'serve.log'}; Ctrl-C stops")

    def _wait_for_interrupt(self) -> None:
        assert self._serve is not None
        code = self._serve.wait()
        raise LaunchError(f"serve run exited with code {code}")

    def _stop(self) -> None:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short and leave
        # Redis running; every wait below is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Stop Serve first so no replica writes to Redis while it shuts down.
        if self._serve is not None and self._serve.poll() is None:
            self._console.print("stopping Serve and Ray")
            self._serve.send_signal(signal.SIGINT)
            try:
                self._serve.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._serve.pid, signal.SIGKILL)
                self._serve.wait()
        if self._redis is not None:
            self._console.print("stopping the embedded Redis")
            self._redis.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _default_sigint() -> None:
    # `serve run` shuts Serve and Ray down on KeyboardInterrupt, which Python
    # raises only if SIGINT was not ignored when it started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _languages(base_url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{base_url}/v1/languages", timeout=10)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _shorten(line: str, width: int = 70) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"
