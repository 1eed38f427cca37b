"""One benchmark session: stream a program at real-time pace, time the output.

Time zero is when the first sample was spoken; sample `p` is spoken at
`p / rate`, and a chunk is sent once all of it has been spoken, as a
microphone would deliver it. Every delay is measured on that clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.bench.peer import FinalSegment
from app.bench.program import Program
from app.bench.words import TimedWord, normalized_words
from app.client import ServerMessage, SessionStream, TolkClient
from app.tasks import cancel_and_wait

# The detector keeps this much silence after the last speech of an utterance
# (6 frames of 32 ms); an utterance's speech ends that long before its end.
TRAILING_PAD_S = 0.192


@dataclass
class UtteranceSample:
    """What one utterance cost, in seconds; None where it never came."""

    session: int
    utterance: int
    final_delay_s: float
    first_audio_delay_s: float | None
    partial_delays_s: list[float]
    asr_compute_s: float
    mt_compute_s: float | None
    tts_compute_s: float | None
    speech_s: float
    # When the speech ended on the session's clock; the voice's time on the
    # first segment, the one first audio waits for.
    speech_end_s: float = 0.0
    first_segment_compute_s: float | None = None


@dataclass
class SessionResult:
    index: int
    utterances: list[UtteranceSample] = field(default_factory=list)
    resumes: list[tuple[int, float]] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    event_ids_exact: bool = True
    finals: list[FinalSegment] = field(default_factory=list)


@dataclass
class _Arrivals:
    """Output of one utterance, with the session-clock time of each arrival."""

    partials: list[tuple[float, str]] = field(default_factory=list)
    final: tuple[float, ServerMessage] | None = None
    translation: ServerMessage | None = None
    # When the first segment of speech arrived, and the voice's time on all.
    audio_at: float | None = None
    speech_compute_ms: int = 0
    first_segment_compute_ms: int | None = None


async def run_session(
    client: TolkClient,
    index: int,
    program: Program,
    words: dict[str, list[TimedWord]],
    *,
    targets: list[str],
    chunk_s: float,
    listeners: int = 0,
    reconnect_every_s: float = 0.0,
    away_s: float = 0.0,
    timeout_s: float = 600.0,
) -> SessionResult:
    """Streams `program` into a new session; returns its samples."""
    result = SessionResult(index)
    session = await client.create_session("en", targets, program.sample_rate)
    async with client.stream(session) as stream:
        extra = [client.stream(session) for _ in range(listeners)]
        for listener in extra:
            await listener.__aenter__()
        dropping: list[asyncio.Task[None]] = []
        try:
            started = time.monotonic()

            def clock() -> float:
                return time.monotonic() - started

            receiving = asyncio.create_task(_receive(stream, clock, result, targets[0]))
            listening = [asyncio.create_task(_drain(listener)) for listener in extra]
            dropping += [
                asyncio.create_task(
                    _drop_now_and_then(listener, reconnect_every_s, away_s)
                )
                for listener in extra
                if reconnect_every_s
            ]
            await _send(stream, program, chunk_s, started, reconnect_every_s)
            arrivals = await asyncio.wait_for(receiving, timeout_s)
            await asyncio.wait_for(asyncio.gather(*listening), timeout_s)
        finally:
            await cancel_and_wait(*dropping)
            for listener in extra:
                await listener.close()

    result.resumes = list(stream.resumes) + [
        resume for listener in extra for resume in listener.resumes
    ]
    result.replicas = list(stream.replicas)
    result.utterances = _samples(index, program, words, arrivals)
    await client.close_session(session)
    return result


async def _send(
    stream: SessionStream,
    program: Program,
    chunk_s: float,
    started: float,
    reconnect_every_s: float,
) -> None:
    step = max(1, int(program.sample_rate * chunk_s))
    total = len(program.pcm16) // 2
    next_drop = reconnect_every_s * random.uniform(0.5, 1.5)
    for first in range(0, total, step):
        last = min(total, first + step)
        # Sent once spoken: the chunk's last sample is spoken at last / rate.
        due = started + last / program.sample_rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await stream.send_audio(program.pcm16[first * 2 : last * 2])
        if reconnect_every_s and last / program.sample_rate >= next_drop:
            stream.drop()
            next_drop += reconnect_every_s * random.uniform(0.5, 1.5)
    await stream.end()


async def _receive(
    stream: SessionStream,
    clock: Callable[[], float],
    result: SessionResult,
    language: str,
) -> dict[int, _Arrivals]:
    """Arrival times of each utterance's output; speech in `language` only."""
    arrivals: dict[int, _Arrivals] = {}
    ids: list[int] = []
    async for message in stream.messages():
        at = clock()
        if message.id is not None:
            ids.append(message.id)
        data = message.data
        if message.type == "end_of_stream":
            break
        if message.type in ("error", "stage_error", "recovery_impossible"):
            result.errors.append(f"{message.type}: {data}")
            continue
        number = data.get("utterance")
        if number is None:
            continue
        entry = arrivals.setdefault(number, _Arrivals())
        if message.type == "partial":
            entry.partials.append((at, data["text"]))
        elif message.type == "final":
            entry.final = (at, message)
            result.finals.append(
                FinalSegment(
                    at, data["start_ms"] / 1000, data["end_ms"] / 1000, data["text"]
                )
            )
        elif message.type == "translation" and data["language"] == language:
            entry.translation = message
        elif message.type == "audio" and data["language"] == language:
            if entry.audio_at is None:
                entry.audio_at = at
                entry.first_segment_compute_ms = data.get("compute_ms", 0)
            entry.speech_compute_ms += data.get("compute_ms", 0)
    result.event_ids_exact = (
        ids == list(range(ids[0], ids[0] + len(ids))) if ids else True
    )
    return arrivals


async def _drop_now_and_then(
    listener: SessionStream, every_s: float, away_s: float
) -> None:
    """Cuts a listener's connection about every `every_s`, away `away_s` each time.

    The session goes on meanwhile, so the listener has events to catch up on.
    """
    while True:
        await asyncio.sleep(every_s * random.uniform(0.5, 1.5))
        listener.drop(away_s)


async def _drain(stream: SessionStream) -> None:
    async for message in stream.messages():
        if message.type == "end_of_stream":
            return


def _samples(
    index: int,
    program: Program,
    words: dict[str, list[TimedWord]],
    arrivals: dict[int, _Arrivals],
) -> list[UtteranceSample]:
    samples = []
    for number in sorted(arrivals):
        entry = arrivals[number]
        if entry.final is None or not entry.final[1].data["text"]:
            continue
        final_at, final = entry.final
        start_s = final.data["start_ms"] / 1000
        speech_end_s = max(start_s, final.data["end_ms"] / 1000 - TRAILING_PAD_S)
        audio_at = entry.audio_at
        samples.append(
            UtteranceSample(
                session=index,
                utterance=number,
                final_delay_s=final_at - speech_end_s,
                first_audio_delay_s=None
                if audio_at is None
                else audio_at - speech_end_s,
                partial_delays_s=_partial_delays(
                    entry.partials, _spoken_words(program, words, start_s, speech_end_s)
                ),
                asr_compute_s=final.data.get("compute_ms", 0) / 1000,
                mt_compute_s=_compute(entry.translation),
                tts_compute_s=None
                if audio_at is None
                else entry.speech_compute_ms / 1000,
                speech_s=speech_end_s - start_s,
                speech_end_s=speech_end_s,
                first_segment_compute_s=None
                if entry.first_segment_compute_ms is None
                else entry.first_segment_compute_ms / 1000,
            )
        )
    return samples


def _compute(message: ServerMessage | None) -> float | None:
    return None if message is None else message.data.get("compute_ms", 0) / 1000


def _spoken_words(
    program: Program,
    words: dict[str, list[TimedWord]],
    start_s: float,
    end_s: float,
) -> list[tuple[str, float]]:
    """The words spoken between two session times, with their end times."""
    spoken = []
    for span in program.spans:
        offset = span.start / program.sample_rate
        for word in words.get(span.clip.name, []):
            at = offset + word.end_s
            if start_s <= at <= end_s + TRAILING_PAD_S:
                spoken.append((word.word, at))
    return spoken


def _partial_delays(
    partials: list[tuple[float, str]], spoken: list[tuple[str, float]]
) -> list[float]:
    """For each spoken word a partial showed, from its end to that partial.

    Words are matched in order: the k-th spoken word is shown by a partial
    whose words, aligned from the start, hold it at position k.
    """
    delays = []
    for position, (word, spoken_at) in enumerate(spoken):
        for arrived_at, text in partials:
            shown = normalized_words(text)
            if (
                arrived_at >= spoken_at
                and word in shown[max(0, position - 2) : position + 3]
            ):
                delays.append(arrived_at - spoken_at)
                break
    return delays
