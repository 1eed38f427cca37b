"""Limits over the real service: each one refuses the excess, nothing else."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import redis.asyncio as redis
import websockets

from app.audio_file import read_pcm16
from app.client import TolkClient, TolkClientError
from app.embedded_redis import EmbeddedRedis
from app.protocol import CloseCode
from app.settings import IngressSettings
from tests.service.conftest import LIMITED_KEY, SESSIONS_PER_KEY

pytestmark = pytest.mark.service

_DEFAULTS = IngressSettings()


async def _hello(url: str, token: str) -> websockets.ClientConnection:
    socket = await websockets.connect(url)
    await socket.send(json.dumps({"type": "hello", "token": token}))
    return socket


async def test_connections_per_session_are_limited(service_url: str) -> None:
    limit = _DEFAULTS.max_connections_per_session
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)
        other = await client.create_session("en", ["pt"], 16000)

    sockets = [await _hello(session.websocket_url, session.token) for _ in range(limit)]
    try:
        for socket in sockets:
            assert json.loads(await socket.recv())["type"] == "ready"

        extra = await _hello(session.websocket_url, session.token)
        error = json.loads(await asyncio.wait_for(extra.recv(), 15))
        await asyncio.wait_for(extra.wait_closed(), 15)
        assert error["code"] == "too_many_connections"
        assert extra.close_code == CloseCode.TOO_MANY_CONNECTIONS

        # Another session is not affected, and a closed connection frees a place.
        elsewhere = await _hello(other.websocket_url, other.token)
        assert json.loads(await elsewhere.recv())["type"] == "ready"
        await elsewhere.close()
        await sockets.pop().close()
        for _ in range(50):
            again = await _hello(session.websocket_url, session.token)
            answer = json.loads(await again.recv())
            if answer["type"] == "ready":
                sockets.append(again)
                break
            await again.close()
            await asyncio.sleep(0.1)
        assert answer["type"] == "ready"
    finally:
        for socket in sockets:
            await socket.close()


async def _send_until_stored(
    socket: websockets.ClientConnection, seconds: float, stored_s: float
) -> None:
    frame = b"\x00\x00" * 1600
    for _ in range(int(seconds * 10)):
        await socket.send(frame)
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), 60))
        if message.get("input_samples") == int(stored_s * 16000):
            return


async def test_audio_faster_than_the_limit_is_slowed_down(service_url: str) -> None:
    speed, burst_s = _DEFAULTS.max_audio_speed, _DEFAULTS.audio_burst_s
    audio_s = burst_s + 20
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)

    socket = await _hello(session.websocket_url, session.token)
    try:
        assert json.loads(await socket.recv())["type"] == "ready"
        started = time.monotonic()
        await _send_until_stored(socket, audio_s, audio_s)
        elapsed = time.monotonic() - started
    finally:
        await socket.close()

    # What goes beyond the burst is read at `speed` times real time at most.
    assert elapsed >= 0.9 * (audio_s - burst_s) / speed


async def test_reconnecting_gives_no_fresh_burst(service_url: str) -> None:
    speed, burst_s = _DEFAULTS.max_audio_speed, _DEFAULTS.audio_burst_s
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)

    started = time.monotonic()
    first = await _hello(session.websocket_url, session.token)
    assert json.loads(await first.recv())["type"] == "ready"
    await _send_until_stored(first, burst_s, burst_s)
    await first.close()
    # A new connection (on either replica) continues the session's pace.
    second = await _hello(session.websocket_url, session.token)
    try:
        assert json.loads(await second.recv())["type"] == "ready"
        await _send_until_stored(second, 20, burst_s + 20)
    finally:
        await second.close()

    assert time.monotonic() - started >= 0.9 * 20 / speed


async def test_a_session_ends_at_its_maximum_length(
    service_url: str, redis_server: EmbeddedRedis
) -> None:
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)
    # As if it had been created longer ago than the limit.
    connection = redis.Redis.from_url(redis_server.url)
    created_ms = int((time.time() - _DEFAULTS.max_session_s - 1) * 1000)
    await connection.hset(
        f"tolk:{{{session.session_id}}}:session", "created_ms", created_ms
    )
    await connection.aclose()

    socket = await _hello(session.websocket_url, session.token)
    error = json.loads(await asyncio.wait_for(socket.recv(), 15))
    await asyncio.wait_for(socket.wait_closed(), 15)

    assert error["code"] == "session_too_long"
    assert socket.close_code == CloseCode.SESSION_CLOSED


async def test_listeners_leave_the_speaker_a_place(service_url: str) -> None:
    limit = _DEFAULTS.max_connections_per_session
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)
        listener = await client.add_listener(session)

    sockets = [
        await _hello(session.websocket_url, listener.token) for _ in range(limit - 1)
    ]
    try:
        for socket in sockets:
            assert json.loads(await socket.recv())["type"] == "ready"
        extra = await _hello(session.websocket_url, listener.token)
        sockets.append(extra)
        assert json.loads(await extra.recv())["code"] == "too_many_connections"

        speaker = await _hello(session.websocket_url, session.token)
        sockets.append(speaker)
        assert json.loads(await speaker.recv())["type"] == "ready"
    finally:
        for socket in sockets:
            await socket.close()


async def test_listener_tokens_are_limited(service_url: str) -> None:
    limit = _DEFAULTS.max_listeners_per_session
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)
        for _ in range(limit):
            await client.add_listener(session)
        with pytest.raises(TolkClientError, match="429"):
            await client.add_listener(session)


async def test_an_api_key_has_a_bounded_number_of_sessions(service_url: str) -> None:
    async with TolkClient(service_url, api_key=LIMITED_KEY) as client:
        sessions = await asyncio.gather(
            *(
                client.create_session("en", ["pt"], 16000)
                for _ in range(SESSIONS_PER_KEY)
            )
        )
        with pytest.raises(TolkClientError, match="429"):
            await client.create_session("en", ["pt"], 16000)
        # The other key is not affected; ending a session frees a place.
        async with TolkClient(service_url) as other:
            await other.create_session("en", ["pt"], 16000)
        await client.close_session(sessions[0])
        await client.create_session("en", ["pt"], 16000)


def _short_utterances(audio_dir: Path, count: int) -> tuple[bytes, int]:
    """`count` utterances of about a second of speech, each followed by silence."""
    pieces: list[bytes] = []
    rate = 0
    for path in sorted(audio_dir.glob("*.wav")):
        pcm, rate = read_pcm16(path)
        for start_s in (0.3, 2.0):
            speech = pcm[int(start_s * rate) * 2 : int((start_s + 1.2) * rate) * 2]
            pieces += [speech, b"\x00\x00" * rate]
        if len(pieces) >= 2 * count:
            break
    return b"".join(pieces[: 2 * count]), rate


async def test_a_backlog_of_utterances_pauses_the_speaker(
    service_url: str, redis_server: EmbeddedRedis, audio_dir: Path
) -> None:
    limit = _DEFAULTS.max_pending_utterances
    pcm, rate = _short_utterances(audio_dir, limit + 8)
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], rate)
    keys = f"tolk:{{{session.session_id}}}"
    connection = redis.Redis.from_url(redis_server.url)
    # As if the stages were busy with it: no replica can take its jobs.
    await connection.set(f"{keys}:lease", "held-by-the-test", px=120_000)

    socket = await _hello(session.websocket_url, session.token)
    acked = 0

    async def send() -> None:
        step = int(rate * 0.1) * 2
        for offset in range(0, len(pcm), step):
            await socket.send(pcm[offset : offset + step])

    async def read() -> None:
        nonlocal acked
        async for text in socket:
            message = json.loads(text)
            if message["type"] == "ack":
                acked = message["input_samples"]

    tasks = [asyncio.create_task(send()), asyncio.create_task(read())]
    try:
        most = 0
        for _ in range(600):
            most = max(most, await connection.hlen(f"{keys}:jobs"))
            if most >= limit:
                break
            await asyncio.sleep(0.1)
        assert most == limit

        # Paused: nothing more is read while the backlog stays, and another
        # connection of the session gets no audio in either.
        paused_at = acked
        other = await _hello(session.websocket_url, session.token)
        ready = json.loads(await other.recv())
        start = ready["input_samples"] * 2
        for offset in range(start, start + 20 * 4410, 4410):
            await other.send(pcm[offset : offset + 4410])
        await asyncio.sleep(2)
        assert acked == paused_at < len(pcm) // 2
        assert await connection.hlen(f"{keys}:jobs") == limit
        stored = await connection.hget(f"{keys}:session", "input_samples")
        assert int(stored) == ready["input_samples"]
        await other.close()

        # The stages catch up (here: a job is taken away), and input goes on.
        oldest = min(int(seq) for seq in await connection.hkeys(f"{keys}:jobs"))
        await connection.hdel(f"{keys}:jobs", oldest)
        for _ in range(100):
            if acked > paused_at:
                break
            await asyncio.sleep(0.1)
        assert acked > paused_at
        assert await connection.hlen(f"{keys}:jobs") <= limit
    finally:
        for task in tasks:
            task.cancel()
        await socket.close()
        async with TolkClient(service_url) as client:
            await client.close_session(session)
        await connection.aclose()
