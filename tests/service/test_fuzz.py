"""Random frames thrown at the live service; then a normal session must work."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import struct
from pathlib import Path

import httpx
import pytest
import ray
import redis.asyncio as redis
import websockets
from websockets.exceptions import ConnectionClosed

from app.client import TolkClient
from app.embedded_redis import EmbeddedRedis
from app.settings import IngressSettings
from tests.service.helpers import references, translate_clip, words

pytestmark = pytest.mark.service

_CONNECTIONS = 40
_FRAMES_PER_CONNECTION = 30
# Tasks that come and go on their own (Serve's, a flush in progress); each
# leaked connection would leave several.
_TASK_MARGIN = 10


def _hostile_frame(rng: random.Random, token: str) -> str | bytes:
    """One frame of the kinds broken or hostile clients send."""
    choice = rng.randrange(12)
    if choice == 0:
        return rng.randbytes(rng.randrange(0, 4000))
    if choice == 1:
        return rng.randbytes(2 * rng.randrange(1, 2000) + 1)
    if choice == 2:
        nan = struct.pack("<f", math.nan)
        return nan * rng.randrange(1, 500)
    if choice == 3:
        return b"\xff\x7f\x00\x80" * rng.randrange(1, 4000)
    if choice == 4:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(50))
    if choice == 5:
        return json.dumps({"type": rng.choice(["hello", "config", "end", "x", ""])})
    if choice == 6:
        rate = rng.choice([0, -1, 1, 7999, 192001, 10**12, 44100])
        return json.dumps({"type": "config", "sample_rate": rate})
    if choice == 7:
        return json.dumps({"type": "hello", "token": token, "last_event_id": -5})
    if choice == 8:
        return json.dumps({"type": "config", "sample_rate": "fast", "extra": [1]})
    if choice == 9:
        return "{" * rng.randrange(1, 5000)
    if choice == 10:
        return json.dumps({"type": "end"})
    return rng.randbytes(rng.randrange(1 << 20, (1 << 20) + 4096))


async def _throw(url: str, token: str, rng: random.Random) -> None:
    try:
        async with websockets.connect(url, max_size=None) as socket:
            if rng.random() < 0.7:
                await socket.send(json.dumps({"type": "hello", "token": token}))
            for _ in range(_FRAMES_PER_CONNECTION):
                await socket.send(_hostile_frame(rng, token))
                if rng.random() < 0.2:
                    await asyncio.sleep(0.01)
    except ConnectionClosed:
        return


async def _fuzz_round(client: TolkClient, seed: int) -> None:
    rng = random.Random(seed)
    sessions = [await client.create_session("en", ["pt"], 16000) for _ in range(4)]
    await asyncio.gather(
        *(
            _throw(session.websocket_url, session.token, random.Random(rng.random()))
            for _ in range(_CONNECTIONS // len(sessions))
            for session in sessions
        )
    )


def _metrics_url() -> str:
    node = next(node for node in ray.nodes() if node["Alive"])
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


async def _tasks(http: httpx.AsyncClient) -> float:
    """Asyncio tasks of every ingress replica, as Ray's metrics agent has them."""
    text = (await http.get(_metrics_url())).text
    samples = re.findall(r"^ray_tolk_tasks(?:{.*})? ([0-9.eE+-]+)$", text, re.M)
    return sum(float(sample) for sample in samples)


async def _redis_clients(monitor: redis.Redis) -> int:
    # Closed sockets take a moment to be counted out.
    await asyncio.sleep(3)
    return int((await monitor.info("clients"))["connected_clients"])


async def test_random_frames_leave_the_service_serving(
    service_url: str, redis_server: EmbeddedRedis, audio_dir: Path
) -> None:
    monitor = redis.Redis.from_url(redis_server.url)
    metrics = httpx.AsyncClient(timeout=10)
    # Replicas sample their tasks every few seconds; a new service has none yet.
    for _ in range(30):
        tasks_before = await _tasks(metrics)
        if tasks_before:
            break
        await asyncio.sleep(2)
    async with TolkClient(service_url) as client:
        for seed in (20261204, 4):
            await _fuzz_round(client, seed)
        after = await _redis_clients(monitor)
        # Every connection is gone, and so are its tasks, once the replicas'
        # next samples are exported.
        for _ in range(30):
            tasks_after = await _tasks(metrics)
            if tasks_after <= tasks_before + _TASK_MARGIN:
                break
            await asyncio.sleep(2)
        await metrics.aclose()

        # The service still translates a normal session correctly.
        clip = "LJ001-0002.wav"
        output = await translate_clip(client, audio_dir / clip, ["pt"])
    await monitor.aclose()

    expected = words(references(audio_dir)[clip])
    heard = words(" ".join(output.finals.values()))
    assert len(set(expected) & set(heard)) >= 0.8 * len(set(expected))
    assert output.translations["pt"]
    # Each ingress replica's pool grows to its bound and no further; besides
    # them only this test's monitor is connected.
    assert after <= 2 * IngressSettings().redis_max_connections + 1
    assert tasks_before > 0
    assert tasks_after <= tasks_before + _TASK_MARGIN

    async with httpx.AsyncClient(base_url=service_url, timeout=30) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text
