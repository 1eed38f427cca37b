"""The input side of a session on one replica: audio in, utterances stored.

Every received chunk is resampled, cut by the segmenter and written to Redis
in one script that also checks the input's position: the write counts only if
nobody else wrote since this replica last read or wrote the input. A replica
whose view is stale reloads it and applies the chunk again, so a session's
input can move between replicas at any chunk, and audio that a resuming
client sends twice is stored once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import InputMoved, ProtocolViolation
from app.protocol import CloseCode
from app.resampling import ResamplerState, resample
from app.segmenter import EndedUtterance, Segmentation, Segmenter, SegmenterState
from app.store import InputWrite, SessionStore

logger = logging.getLogger("tolk.intake")

_MOVED_RETRIES = 5


@dataclass(frozen=True)
class Stored:
    """Where the session's input stands after a chunk, and what to heed.

    `backlogged`: as many utterances and `end`s wait to be output as the
    store takes audio for; `pace_wait_s` is how far the session's audio is
    ahead of its pace.
    """

    position: int
    backlogged: bool = False
    pace_wait_s: float = 0.0


@dataclass
class _Input:
    """This replica's copy of the session's input state."""

    version: int
    position: int
    sample_rate: int
    resampler: ResamplerState
    segmenter: SegmenterState
    buffer: bytearray
    utterances: int


class SessionIntake:
    """Applies one session's audio, `config` and `end` to its stored input."""

    def __init__(
        self,
        session_id: str,
        store: SessionStore,
        segmenter: Segmenter,
        *,
        on_partial: Callable[[int, bytes], None],
        on_likely_end: Callable[[int, EndedUtterance], None] = lambda n, u: None,
    ) -> None:
        self.session_id = session_id
        self._store = store
        self._segmenter = segmenter
        self._on_partial = on_partial
        self._on_likely_end = on_likely_end
        self._input: _Input | None = None
        self._lock = asyncio.Lock()

    @property
    def utterances(self) -> int:
        """Utterances that had ended when this replica last saw the input."""
        return self._input.utterances if self._input else 0

    async def feed(self, pcm16: bytes, start: int) -> Stored:
        """Stores audio whose first sample is the client's sample `start`.

        Returns the stored position. Samples before the stored position were
        stored already and are skipped; a chunk that starts after it would
        leave a hole, and the client must resend from the stored position.
        """
        async with self._lock:
            for _ in range(_MOVED_RETRIES):
                fresh = self._input is None
                state = await self._loaded()
                already = state.position - start
                if already * 2 >= len(pcm16):
                    return Stored(state.position)
                if already < 0 and not fresh:
                    # Another replica stored audio since this one last did.
                    self._forget(state.position)
                    continue
                if already < 0:
                    raise ProtocolViolation(
                        self.session_id,
                        f"audio from sample {start} but the session has only "
                        f"{state.position}: resend from there",
                        code="input_gap",
                        fatal=True,
                        close_code=CloseCode.RESYNC_INPUT,
                    )
                try:
                    return await self._apply(state, pcm16[already * 2 :])
                except InputMoved as moved:
                    self._forget(moved.position)
            raise InputMoved(self.session_id, -1)

    async def configure(self, sample_rate: int, at: int) -> Stored:
        """The audio after the client's sample `at` has a new sample rate."""
        return await self._control(at, new_rate=sample_rate)

    async def end(self, at: int) -> Stored:
        """Ends the utterance in progress after the client's sample `at`.

        The `end_of_stream` announcement is queued as a job. An `end` at the
        position of the previous one is a repeat (a resuming client that could
        not know whether it arrived) and is ignored.
        """
        return await self._control(at, end=True)

    async def _control(
        self, at: int, *, end: bool = False, new_rate: int | None = None
    ) -> Stored:
        """Applies `config` or `end`, but only where its sender put it.

        A control message that a stale socket delivers late, after another
        connection moved the input on, belongs to audio already stored: it is
        dropped rather than applied to audio it was never meant for.
        """
        async with self._lock:
            for _ in range(_MOVED_RETRIES):
                fresh = self._input is None
                state = await self._loaded()
                if state.position != at and not fresh:
                    self._forget(state.position)
                    continue
                if state.position != at:
                    logger.info(
                        "session %s: dropped a late %s for sample %d (input at %d)",
                        self.session_id,
                        "end" if end else "config",
                        at,
                        state.position,
                    )
                    return Stored(state.position)
                if new_rate == state.sample_rate:
                    return Stored(state.position)
                try:
                    return await self._apply(state, b"", end=end, new_rate=new_rate)
                except InputMoved as moved:
                    self._forget(moved.position)
            raise InputMoved(self.session_id, -1)

    async def _loaded(self) -> _Input:
        if self._input is None:
            stored = await self._store.input_state(self.session_id)
            resampler = (
                ResamplerState.from_bytes(stored.resampler_state)
                if stored.resampler_state
                else ResamplerState.start(stored.sample_rate)
            )
            self._input = _Input(
                version=stored.version,
                position=stored.position,
                sample_rate=stored.sample_rate,
                resampler=resampler,
                segmenter=SegmenterState.from_bytes(stored.segmenter_state),
                buffer=bytearray(stored.pending_audio),
                utterances=stored.utterances,
            )
        return self._input

    def _forget(self, position: int) -> None:
        logger.info(
            "session %s: input moved on elsewhere (to sample %d); reloading",
            self.session_id,
            position,
        )
        self._input = None

    async def _apply(
        self,
        state: _Input,
        pcm16: bytes,
        *,
        end: bool = False,
        new_rate: int | None = None,
    ) -> Stored:
        seconds = len(pcm16) / 2 / state.sample_rate
        # The in-memory state changes first; any failure below leaves it
        # unusable, so it is dropped and read again from Redis.
        self._input = None
        # In a thread: a large chunk costs the detector real time, and other
        # sockets on this replica must not wait for it.
        segmentation = await asyncio.to_thread(
            self._segment, state, pcm16, end or new_rate is not None, end
        )
        if new_rate is not None:
            state.resampler = ResamplerState.start(new_rate)
            state.sample_rate = new_rate

        write = InputWrite(
            expected_version=state.version,
            samples=len(pcm16) // 2,
            segmenter_state=state.segmenter.to_bytes(),
            resampler_state=state.resampler.to_bytes(),
            append=bytes(segmentation.append),
            replace=segmentation.replace,
            ended=tuple(u.to_bytes() for u in segmentation.ended),
            end=end,
            sample_rate=new_rate,
            seconds=seconds,
        )
        written = await self._store.write_input(self.session_id, write)
        state.position = written.position
        state.version = written.version
        if written.utterances:
            state.utterances = max(written.utterances)
        self._input = state

        if segmentation.likely_end is not None and not segmentation.ended:
            self._on_likely_end(state.utterances + 1, segmentation.likely_end)
        elif segmentation.partial_due and not segmentation.ended:
            self._on_partial(state.utterances + 1, bytes(state.buffer))
        return Stored(state.position, written.backlogged, written.pace_wait_s)

    def _segment(
        self, state: _Input, pcm16: bytes, drain: bool, end: bool
    ) -> Segmentation:
        audio = resample(state.resampler, pcm16, last=drain)
        segmentation = self._segmenter.feed(state.segmenter, state.buffer, audio)
        if end:
            flushed = self._segmenter.flush(state.segmenter, state.buffer)
            segmentation = _merged(segmentation, flushed)
        return segmentation


def _merged(first: Segmentation, second: Segmentation) -> Segmentation:
    """One segmentation with the effect of `first`, then `second`."""
    if second.replace is None:
        first.append.extend(second.append)
        first.ended.extend(second.ended)
        return first
    return Segmentation(
        append=second.append,
        replace=second.replace,
        ended=first.ended + second.ended,
        partial_due=False,
    )
