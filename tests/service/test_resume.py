"""Sessions that survive drops, dead replicas and a Redis restart, exactly once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import ray
import redis.asyncio as redis

from app.audio_file import read_pcm16
from app.client import (
    SessionHandle,
    SessionOutput,
    SessionStream,
    TolkClient,
    TolkClientError,
)
from app.embedded_redis import EmbeddedRedis
from tests.service.helpers import CHUNK_S

pytestmark = pytest.mark.service

CLIPS = ("LJ001-0002.wav", "LJ001-0004.wav")
TARGETS = ["pt"]


def _speech(audio_dir: Path) -> tuple[bytes, int]:
    """Two utterances with a second of silence after each, at the clips' rate."""
    parts, rate = [], 0
    for name in CLIPS:
        pcm, rate = read_pcm16(audio_dir / name)
        parts += [pcm, bytes(rate * 2)]
    return b"".join(parts), rate


async def _run(
    stream: SessionStream,
    pcm: bytes,
    rate: int,
    *,
    pace: float = 4.0,
    after_chunk: Callable[[int], Awaitable[None]] | None = None,
) -> SessionOutput:
    """Streams `pcm` at `pace` times real time and collects the output."""
    output = SessionOutput()

    async def receive() -> None:
        async for message in stream.messages():
            output.add(message)
            if message.type == "end_of_stream":
                return

    receiving = asyncio.create_task(receive())
    step = int(rate * CHUNK_S) * 2
    for index, offset in enumerate(range(0, len(pcm), step)):
        await stream.send_audio(pcm[offset : offset + step])
        if after_chunk is not None:
            await after_chunk(index)
        await asyncio.sleep(CHUNK_S / pace)
    await stream.end()
    await asyncio.wait_for(receiving, 300)
    return output


async def _reconnected(stream: SessionStream, connections: int) -> None:
    """Waits until the stream has made `connections` connections."""
    for _ in range(400):
        if len(stream.replicas) >= connections:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"no reconnection after {connections - 1} connections")


@pytest.fixture(scope="module")
async def reference(service_url: str, audio_dir: Path) -> SessionOutput:
    """The output of the same speech streamed without any interruption."""
    pcm, rate = _speech(audio_dir)
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", TARGETS, rate)
        async with client.stream(session) as stream:
            output = await _run(stream, pcm, rate)
    assert len(output.finals) == 2 and all(output.finals.values())
    return output


def _assert_exactly_once(output: SessionOutput, reference: SessionOutput) -> None:
    assert output.finals == reference.finals
    assert output.translations == reference.translations
    assert output.segments("pt") == reference.segments("pt")
    assert list(output.segments("pt")) == [1, 2]
    assert output.speech("pt").keys() == reference.speech("pt").keys()
    assert output.event_ids == list(range(1, len(output.event_ids) + 1))
    assert not output.recoveries


async def test_twenty_drops_change_nothing(
    service_url: str, audio_dir: Path, reference: SessionOutput
) -> None:
    pcm, rate = _speech(audio_dir)
    chunks = len(range(0, len(pcm), int(rate * CHUNK_S) * 2))
    drops = set(random.Random(7).sample(range(chunks), 20))

    async with TolkClient(service_url) as client:
        session = await client.create_session("en", TARGETS, rate)
        async with client.stream(session) as stream:

            async def drop(index: int) -> None:
                if index in drops:
                    connections = len(stream.replicas)
                    stream.drop()
                    await _reconnected(stream, connections + 1)

            output = await _run(stream, pcm, rate, after_chunk=drop)

    assert len(stream.replicas) == 21
    assert len(set(stream.replicas)) == 2, "all connections reached one replica"
    _assert_exactly_once(output, reference)


def _kill_replica(replica_id: str) -> None:
    name = f"SERVE_REPLICA::tolk#Ingress#{replica_id}"
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


async def test_killed_replica_loses_nothing(
    service_url: str, audio_dir: Path, reference: SessionOutput
) -> None:
    pcm, rate = _speech(audio_dir)
    # Mid-way through the second utterance, which starts at about 2.9 s.
    kill_at = int(4.5 / CHUNK_S)

    async with TolkClient(service_url) as client:
        session = await client.create_session("en", TARGETS, rate)
        async with client.stream(session) as stream:

            async def kill(index: int) -> None:
                if index == kill_at:
                    _kill_replica(stream.replica)
                    await _reconnected(stream, 2)

            output = await _run(stream, pcm, rate, pace=1.0, after_chunk=kill)

    assert stream.replicas[0] != stream.replicas[-1]
    _assert_exactly_once(output, reference)


async def test_redis_restart_loses_nothing(
    service_url: str,
    audio_dir: Path,
    redis_server: EmbeddedRedis,
    reference: SessionOutput,
) -> None:
    pcm, rate = _speech(audio_dir)
    stop_at = int(3.5 / CHUNK_S)

    async with TolkClient(service_url) as client:
        session = await client.create_session("en", TARGETS, rate)
        async with client.stream(session) as stream:

            async def outage(index: int) -> None:
                if index == stop_at:
                    await asyncio.to_thread(redis_server.stop)
                    # New sessions are refused meanwhile, and said so.
                    with pytest.raises(TolkClientError, match="HTTP 503"):
                        await client.create_session("en", TARGETS, rate)
                    await asyncio.sleep(5)
                    await asyncio.to_thread(redis_server.start)

            output = await _run(stream, pcm, rate, pace=1.0, after_chunk=outage)

    assert stream.outages, "the client was not told that the store was down"
    _assert_exactly_once(output, reference)


async def test_a_closed_listener_does_not_disturb_the_others(
    service_url: str, audio_dir: Path, reference: SessionOutput
) -> None:
    pcm, rate = _speech(audio_dir)
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", TARGETS, rate)
        async with (
            client.stream(session) as speaker,
            client.stream(session) as listener,
            client.stream(session) as leaver,
        ):

            async def leave() -> int:
                async for message in leaver.messages():
                    # In the middle of the first utterance's broadcast.
                    if message.type == "translation":
                        await leaver.close()
                        return message.id or 0
                return 0

            async def listen() -> SessionOutput:
                output = SessionOutput()
                async for message in listener.messages():
                    output.add(message)
                    if message.type == "end_of_stream":
                        break
                return output

            leaving = asyncio.create_task(leave())
            listening = asyncio.create_task(listen())
            spoken = await _run(speaker, pcm, rate)
            left_at = await leaving
            heard = await asyncio.wait_for(listening, 60)

    assert left_at > 0
    _assert_exactly_once(spoken, reference)
    assert heard.event_ids == spoken.event_ids
    assert heard.finals == spoken.finals


async def _ended_three_times(client: TolkClient) -> SessionHandle:
    """A session whose log holds three events, made without any speech."""
    session = await client.create_session("en", TARGETS, 16_000)
    async with client.stream(session) as stream:
        for _ in range(3):
            await stream.send_audio(bytes(3200))
            await stream.end()
        ends = 0
        async for message in stream.messages():
            ends += message.type == "end_of_stream"
            if ends == 3:
                break
    return session


async def test_resuming_from_a_trimmed_event_is_refused_explicitly(
    service_url: str, redis_server: EmbeddedRedis
) -> None:
    async with TolkClient(service_url) as client:
        session = await _ended_three_times(client)
        client_redis = redis.Redis.from_url(redis_server.url)
        events = f"tolk:{{{session.session_id}}}:events"
        await client_redis.xtrim(events, maxlen=1, approximate=False)
        await client_redis.aclose()

        async with client.connect(session, last_event_id=1) as connection:
            messages = connection.messages()
            notice = await asyncio.wait_for(anext(messages), 10)
            assert notice.type == "recovery_impossible"
            assert notice.data["reason"] == "trimmed"
            assert notice.data["last_event_id"] == 3

        async with client.connect(session, last_event_id=2) as connection:
            replayed = await asyncio.wait_for(anext(connection.messages()), 10)
            assert replayed.type == "end_of_stream" and replayed.id == 3


async def test_closing_a_session_closes_every_connection(
    service_url: str, redis_server: EmbeddedRedis
) -> None:
    async with TolkClient(service_url) as client:
        session = await _ended_three_times(client)
        async with client.stream(session) as first, client.stream(session) as second:
            await client.close_session(session)
            for stream in (first, second):
                kinds = [m.type async for m in stream.messages()]
                assert kinds[-1] == "session_closed"

        with pytest.raises(Exception, match="session_closed"):
            async with client.connect(session):
                pass

    client_redis = redis.Redis.from_url(redis_server.url)
    keys = await client_redis.keys(f"tolk:{{{session.session_id}}}:*")
    await client_redis.aclose()
    assert keys == [f"tolk:{{{session.session_id}}}:closed".encode()]


async def test_connections_leave_no_redis_connections_behind(
    service_url: str, redis_server: EmbeddedRedis
) -> None:
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", TARGETS, 16_000)
        monitor = redis.Redis.from_url(redis_server.url)

        async def cycles(count: int) -> None:
            for _ in range(count):
                async with client.connect(session):
                    pass

        await cycles(20)
        await asyncio.sleep(2)
        before = (await monitor.info("clients"))["connected_clients"]
        await cycles(1000)
        await asyncio.sleep(2)
        after = (await monitor.info("clients"))["connected_clients"]
        await monitor.aclose()

    # A leak would add a connection per cycle, a thousand in all; a replica's
    # pool may keep one more when a heartbeat and a hello briefly overlap.
    assert after <= before + 2
