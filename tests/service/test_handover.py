"""A speaker that moves to the other replica mid-processing: output once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.audio_file import read_pcm16
from app.client import Connection, SessionHandle, TolkClient
from tests.service.helpers import collect

pytestmark = pytest.mark.service


async def _connect_to(
    client: TolkClient, session: SessionHandle, *, avoid: str
) -> Connection:
    for _ in range(40):
        connection = client.connect(session)
        await connection.__aenter__()
        if connection.replica != avoid:
            return connection
        await connection.close()
    pytest.fail("never reached the other ingress replica")


async def test_reconnect_on_other_replica_processes_each_utterance_once(
    service_url: str, audio_dir: Path
) -> None:
    pcm, rate = read_pcm16(audio_dir / "LJ001-0002.wav")
    silence = bytes(rate * 2)
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["es"], rate)
        async with client.connect(session) as first:
            await first.send_audio(pcm + silence)
            # Leave while the utterance that just ended is being processed.
            await asyncio.sleep(0.2)

        second = await _connect_to(client, session, avoid=first.replica)
        try:
            await second.send_audio(bytes(3200))
            await second.end()
            output = await collect(second)
        finally:
            await second.close()

    assert list(output.finals) == [1]
    assert list(output.translations["es"]) == [1]
    segments = output.segments("es")
    assert list(segments) == [1]
    assert segments[1] == list(range(len(segments[1])))
    assert output.event_ids == list(range(1, len(output.event_ids) + 1))
