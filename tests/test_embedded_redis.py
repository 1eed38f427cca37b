"""EmbeddedRedis against a real redis-server from PATH."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from app.embedded_redis import (
    AppendFsync,
    EmbeddedRedis,
    EmbeddedRedisError,
    free_port,
)

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not on PATH"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path / "redis", start_timeout_s=5, stop_timeout_s=5)
    with embedded:
        yield embedded


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=2)


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_embedded_redis_answers_on_its_url(server: EmbeddedRedis) -> None:
    assert server.is_running
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with _client(server) as client:
        assert client.ping()


def test_embedded_redis_keeps_data_across_restart(server: EmbeddedRedis) -> None:
    port = server.port
    with _client(server) as client:
        client.set("tolk:test", "kept")

    server.restart()

    assert server.port == port
    with _client(server) as client:
        assert client.get("tolk:test") == b"kept"
    assert (server.data_dir / "appendonlydir").is_dir()


def test_embedded_redis_without_appendonly_forgets_on_restart(
    tmp_path: Path,
) -> None:
    with EmbeddedRedis(tmp_path, appendonly=False) as server:
        with _client(server) as client:
            client.set("tolk:test", "lost")
        server.restart()
        with _client(server) as client:
            assert client.get("tolk:test") is None


def test_embedded_redis_stop_frees_port(server: EmbeddedRedis) -> None:
    server.stop()

    assert not server.is_running
    assert _can_bind(server.port)
    server.stop()  # a second stop is a no-op


def test_embedded_redis_start_is_idempotent(server: EmbeddedRedis) -> None:
    with _client(server) as client:
        pid = client.info("server")["process_id"]
        server.start()
        assert client.info("server")["process_id"] == pid


def test_embedded_redis_restarts_after_kill(server: EmbeddedRedis) -> None:
    with _client(server) as client:
        client.set("tolk:test", "kept")
        pid = client.info("server")["process_id"]

    # No SHUTDOWN: the write must already be in the AOF (the kernel has it,
    # even if the once-a-second fsync has not run yet).
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server.is_running

    server.start()

    with _client(server) as client:
        assert client.get("tolk:test") == b"kept"
        assert client.info("server")["process_id"] != pid


def test_embedded_redis_reports_taken_port(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()

        embedded = EmbeddedRedis(tmp_path, port=port)
        with pytest.raises(EmbeddedRedisError, match=f"port {port} .* in use") as err:
            embedded.start()

    assert err.value.port == port
    assert not embedded.is_running


def test_embedded_redis_reports_exit_with_log_tail(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path, appendfsync=cast(AppendFsync, "sometimes"))

    with pytest.raises(EmbeddedRedisError, match="exited with code") as err:
        embedded.start()

    assert "appendfsync" in str(err.value)
    assert not embedded.is_running


def test_embedded_redis_reports_missing_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(EmbeddedRedisError, match="redis-server was not found"):
        EmbeddedRedis(tmp_path).start()
