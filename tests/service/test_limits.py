"""Limits over the real service: each one refuses the excess, nothing else."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as redis
import websockets

from app.client import TolkClient, TolkClientError
from app.embedded_redis import EmbeddedRedis
from app.protocol import CloseCode
from app.settings import IngressSettings

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


async def test_audio_faster_than_the_limit_is_slowed_down(service_url: str) -> None:
    speed, burst_s = _DEFAULTS.max_audio_speed, _DEFAULTS.audio_burst_s
    audio_s = burst_s + 20
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)
    frame = b"\x00\x00" * 1600

    socket = await _hello(session.websocket_url, session.token)
    try:
        assert json.loads(await socket.recv())["type"] == "ready"
        started = time.monotonic()
        for _ in range(int(audio_s * 10)):
            await socket.send(frame)
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), 60))
            if message.get("input_samples") == int(audio_s * 16000):
                break
        elapsed = time.monotonic() - started
    finally:
        await socket.close()

    # What goes beyond the burst is read at `speed` times real time at most.
    assert elapsed >= 0.9 * (audio_s - burst_s) / speed


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
