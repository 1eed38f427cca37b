"""A `redis-server` child process that Tolk starts, stops and restarts itself.

Tests use it to get a private Redis they can take down and bring back, and
`tolk up` uses it to run the application's Redis next to Ray. The server binds
127.0.0.1 only and keeps its data (append-only file) and its log in one folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger("tolk.redis")

HOST = "127.0.0.1"
LOG_FILE = "redis.log"

AppendFsync = Literal["always", "everysec", "no"]


class EmbeddedRedisError(Exception):
    """The embedded redis-server could not be started or is unusable."""

    def __init__(self, message: str, *, port: int | None = None) -> None:
        super().__init__(message)
        self.port = port

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, port={self.port!r})"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Limitation: another process may take the port between this call and its
    use; `EmbeddedRedis` retries with a new port when it chose the port itself.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option redis-server sets, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


class EmbeddedRedis:
    """One redis-server process bound to 127.0.0.1, with data in `data_dir`.

    `start()`, `stop()` and `restart()` are idempotent and keep the port, so
    `url` stays valid across restarts. With `appendonly` (the default) every
    acknowledged write is in an append-only file, so data survives a restart
    or a killed server; with `appendfsync="everysec"` a machine crash can lose
    the last second.

    Limitation: if the Python process dies without calling `stop()` (SIGKILL,
    power loss), the server keeps running and holds the port until killed.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        appendonly: bool = True,
        appendfsync: AppendFsync = "everysec",
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        """Prepare a server; nothing runs until `start()`.

        Args:
            data_dir: Folder for the append-only file and `redis.log`; created
                on start if missing.
            port: TCP port on 127.0.0.1; a free one is picked when None.
            appendonly: Persist writes to an append-only file.
            appendfsync: How often the append-only file is fsynced.
            start_timeout_s: How long `start()` waits for a PING reply.
            stop_timeout_s: How long `stop()` waits before each escalation
                (SHUTDOWN, then SIGTERM, then SIGKILL).
        """
        self._data_dir = Path(data_dir).resolve()
        self._port_chosen = port is None
        self._port = free_port() if port is None else port
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<EmbeddedRedis {self.url} {state} dir={str(self._data_dir)!r}>"

    @property
    def port(self) -> int:
        """TCP port the server listens on (fixed for the object's lifetime)."""
        return self._port

    @property
    def url(self) -> str:
        """Connection URL for redis-py, database 0."""
        return f"redis://{HOST}:{self._port}/0"

    @property
    def data_dir(self) -> Path:
        """Folder holding the append-only file and `redis.log`."""
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._data_dir / LOG_FILE

    @property
    def is_running(self) -> bool:
        """Whether the server process started by this object is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        Raises:
            EmbeddedRedisError: `redis-server` is not on PATH, the port is
                taken, or the server exited or stayed silent past the timeout
                (the message carries the end of its log).
        """
        if self.is_running:
            return

        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedRedisError(
                "redis-server was not found on PATH; install Redis "
                "(e.g. `apt-get install redis-server`) to run an embedded Redis",
                port=self._port,
            )
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._claim_port()

        self._process = self._spawn(binary)
        try:
            self._wait_until_ready(self._process)
        except BaseException:
            self._kill()
            raise
        self._port_chosen = False
        logger.info(
            "Embedded Redis pid %d listening on %s:%d (data in %s)",
            self._process.pid,
            HOST,
            self._port,
            self._data_dir,
        )

    def stop(self) -> None:
        """Shut the server down and wait for it to exit; no-op if not running.

        The append-only file is flushed and fsynced by SHUTDOWN itself. If the
        server does not exit in time it gets SIGTERM, then SIGKILL.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._shutdown(process)
        self._process = None
        logger.info("Embedded Redis on port %d stopped", self._port)

    def restart(self) -> None:
        """Stop the server (if running) and start it again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _claim_port(self) -> None:
        # A port picked by free_port() may have been taken since. Switching is
        # harmless only before the first start: afterwards callers hold `url`.
        for _ in range(5):
            if _port_is_free(self._port):
                return
            if not self._port_chosen:
                break
            self._port = free_port()
        raise EmbeddedRedisError(
            f"cannot start embedded Redis: port {self._port} on {HOST} is "
            "already in use by another process",
            port=self._port,
        )

    # Limitation: the server has no password; any local user of the machine
    # can read and change the sessions it holds. Give `tolk up` a Redis of
    # your own (`--redis-url`) on a shared machine.
    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            "--port",
            str(self._port),
            "--bind",
            HOST,
            "--dir",
            str(self._data_dir),
            # No RDB snapshots: the append-only file (or nothing) is the record.
            "--save",
            "",
            "--appendonly",
            "yes" if self._appendonly else "no",
            "--appendfsync",
            self._appendfsync,
            "--daemonize",
            "no",
        ]

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        # The log takes stdout and stderr rather than --logfile, so that errors
        # redis prints before it reads its options (bad flag) land there too.
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
            )

    def _client(self, timeout_s: float) -> redis.Redis:
        # No retries: callers poll themselves and must see failures at once.
        return redis.Redis(
            host=HOST,
            port=self._port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self._start_failed(
                    f"redis-server exited with code {process.returncode}"
                )
            if self._answers_as(process.pid):
                return
            time.sleep(0.05)
        raise self._start_failed(
            f"redis-server did not answer PING within {self._start_timeout_s}s"
        )

    def _answers_as(self, pid: int) -> bool:
        # The server must be ours: a stranger that grabbed the port after the
        # check would answer PING as well.
        try:
            with self._client(timeout_s=1.0) as client:
                client.ping()
                info = client.info("server")
        except redis.RedisError:
            # Refused while starting, BusyLoadingError during AOF replay, or a
            # stranger that wants AUTH: none of them is our server ready.
            return False
        return bool(info.get("process_id") == pid)

    def _start_failed(self, reason: str) -> EmbeddedRedisError:
        return EmbeddedRedisError(
            f"cannot start embedded Redis on {HOST}:{self._port}: {reason}. "
            f"Last lines of {self.log_path}:\n{self._log_tail()}",
            port=self._port,
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with self.log_path.open(errors="replace") as log:
                return "".join(deque(log, maxlen=lines)).rstrip()
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def _shutdown(self, process: subprocess.Popen[bytes]) -> None:
        try:
            with self._client(timeout_s=self._stop_timeout_s) as client:
                # NOSAVE skips an RDB dump only; SHUTDOWN still flushes and
                # fsyncs the append-only file whatever the modifiers.
                client.shutdown(nosave=True)
        except redis.RedisError as exc:
            logger.warning("SHUTDOWN of embedded Redis failed: %s", exc)
        if self._exited(process):
            return

        logger.warning("Embedded Redis pid %d ignored SHUTDOWN; SIGTERM", process.pid)
        process.terminate()
        if self._exited(process):
            return

        logger.warning("Embedded Redis pid %d ignored SIGTERM; SIGKILL", process.pid)
        process.kill()
        process.wait()

    def _exited(self, process: subprocess.Popen[bytes]) -> bool:
        try:
            process.wait(timeout=self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
