"""What a resuming client keeps and resends: pure bookkeeping, no service."""

from __future__ import annotations

import asyncio
from typing import Any

from app.client import SessionHandle, SessionStream

SESSION = SessionHandle(session_id="s", token="t", websocket_url="ws://nowhere/ws/s")


class _Recorder:
    """Stands in for a socket: records what the stream sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_audio(self, pcm16: bytes) -> None:
        self.sent.append(len(pcm16) // 2)

    async def configure(self, *, sample_rate: int) -> None:
        self.sent.append(("config", sample_rate))

    async def end(self) -> None:
        self.sent.append("end")


async def _queued() -> SessionStream:
    stream = SessionStream(SESSION)
    for _ in range(3):
        await stream.send_audio(bytes(200))  # 100 samples each
    await stream.configure(sample_rate=48_000)
    await stream.send_audio(bytes(200))
    await stream.end()
    return stream


async def _sent_from(stream: SessionStream, start: int) -> list[Any]:
    recorder = _Recorder()
    sending = asyncio.create_task(stream._send(recorder, start))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    sending.cancel()
    return recorder.sent


async def test_a_resumed_stream_starts_exactly_at_the_stored_sample() -> None:
    stream = await _queued()

    stream._acknowledge(150)

    assert await _sent_from(stream, 150) == [50, 100, ("config", 48_000), 100, "end"]


async def test_acknowledged_input_is_forgotten_in_order() -> None:
    stream = await _queued()

    stream._acknowledge(300)
    # The config sits at sample 300: only audio after it proves it applied.
    assert await _sent_from(stream, 300) == [("config", 48_000), 100, "end"]

    stream._acknowledge(400)
    assert await _sent_from(stream, 400) == ["end"]

    stream._forget_end()
    assert await _sent_from(stream, 400) == []
    assert stream.acked_samples == 400


async def test_input_queued_while_connected_follows_at_once() -> None:
    stream = SessionStream(SESSION)
    recorder = _Recorder()
    sending = asyncio.create_task(stream._send(recorder, 0))  # type: ignore[arg-type]

    await stream.send_audio(bytes(20))
    await asyncio.sleep(0.01)
    await stream.send_audio(bytes(40))
    await stream.end()
    await asyncio.sleep(0.01)
    sending.cancel()

    assert recorder.sent == [10, 20, "end"]
