"""Input that tempts a speech service to invent, choke or leak."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from app.audio_file import read_pcm16
from app.client import Connection, SessionOutput, TolkClient
from app.protocol import CloseCode
from app.settings import IngressSettings
from tests.service.helpers import collect

pytestmark = pytest.mark.service

_RATE = 16_000


async def _send(connection: Connection, pcm: bytes, chunk_s: float = 0.1) -> None:
    step = int(_RATE * chunk_s) * 2
    for offset in range(0, len(pcm), step):
        await connection.send_audio(pcm[offset : offset + step])
    await connection.end()


async def test_a_minute_of_silence_and_noise_invents_no_text(service_url: str) -> None:
    rng = np.random.default_rng(7)
    silence = np.zeros(30 * _RATE)
    hiss = rng.standard_normal(30 * _RATE) * 0.003 * 32768
    pcm = np.concatenate([silence, hiss]).astype("<i2").tobytes()
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], _RATE)
        async with client.connect(session) as connection:
            received = asyncio.create_task(collect(connection))
            await _send(connection, pcm)
            output = await received

    assert not any(text.strip() for text in output.finals.values())
    assert not output.audio


async def test_an_endless_utterance_is_cut_and_every_part_transcribed(
    service_url: str, audio_dir: Path
) -> None:
    # Eight clips back to back, their pauses squeezed out: about 50 s of
    # speech with no silence long enough to end an utterance.
    parts = []
    for index in range(1, 9):
        pcm, rate = read_pcm16(audio_dir / f"LJ001-{index:04d}.wav")
        assert rate == 22050
        samples = np.frombuffer(pcm, dtype="<i2")
        loud = np.flatnonzero(np.abs(samples) > 500)
        parts.append(samples[loud[0] : loud[-1]])
    speech = np.concatenate(parts).astype("<i2").tobytes()
    limit_ms = IngressSettings().max_utterance_s * 1000

    speech_ms = len(speech) // 2 * 1000 // 22050

    async def finals(connection: Connection) -> SessionOutput:
        # Up to the final that reaches the end of the speech: what it is
        # spoken as in Portuguese is not this test's business.
        output = SessionOutput()
        async for message in connection.messages():
            output.add(message)
            if message.type == "final" and message.data["end_ms"] >= speech_ms - 1000:
                return output
        return output

    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 22050)
        async with client.connect(session) as connection:
            received = asyncio.create_task(asyncio.wait_for(finals(connection), 600))
            step = 2205 * 2
            for offset in range(0, len(speech), step):
                await connection.send_audio(speech[offset : offset + step])
            await connection.end()
            output = await received
        # Ending it spares the machine the synthesis of a minute of speech.
        await client.close_session(session)

    assert len(output.finals) >= 3
    assert all(text.strip() for text in output.finals.values())
    lengths = [end_ms - start_ms for start_ms, end_ms in output.spans.values()]
    # Cut at the limit, not at a pause: no pause was long enough.
    assert max(lengths) >= limit_ms - 500
    assert all(length <= limit_ms + 100 for length in lengths)


async def test_a_flood_of_silent_connections_is_shed(service_url: str) -> None:
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], _RATE)
    url = session.websocket_url

    # They open sockets and never say hello.
    sockets = await asyncio.gather(*(websockets.connect(url) for _ in range(150)))
    # The service answers meanwhile, and a real client gets in.
    async with httpx.AsyncClient(base_url=service_url, timeout=30) as http:
        assert (await http.get("/readyz")).status_code == 200
    async with TolkClient(service_url) as client, client.connect(session) as peer:
        assert peer.ready["type"] == "ready"

    timeout = IngressSettings().auth_timeout_s
    closes = await asyncio.gather(
        *(asyncio.wait_for(_closed(socket), timeout + 30) for socket in sockets)
    )
    assert set(closes) == {CloseCode.AUTH_TIMEOUT}


async def _closed(socket: websockets.ClientConnection) -> int | None:
    try:
        error = json.loads(await socket.recv())
        assert error["code"] == "auth_timeout"
        await socket.wait_closed()
    finally:
        await socket.close()
    return socket.close_code
