"""Fixtures shared by all tests: a real Redis of the tests' own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.embedded_redis import EmbeddedRedis
from app.store import SessionStore

AUDIO_DIR = Path(__file__).resolve().parents[2] / "shared" / "audio" / "ljspeech"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--audio-dir",
        default=None,
        help="folder of clips and references.tsv (default ../shared/audio/ljspeech)",
    )


@pytest.fixture(scope="session")
def audio_dir(request: pytest.FixtureRequest) -> Path:
    folder = Path(request.config.getoption("--audio-dir") or AUDIO_DIR)
    if not (folder / "references.tsv").exists():
        pytest.fail(f"no speech clips in {folder}; pass --audio-dir")
    return folder


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendfsync="always")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def store(redis_server: EmbeddedRedis) -> AsyncIterator[SessionStore]:
    session_store = SessionStore(redis_server.url, ttl_s=60, max_events=50)
    await session_store.client.flushdb()
    yield session_store
    await session_store.aclose()
