"""Turns a session's incoming audio into its output events.

A processor runs on each replica that holds a speaking connection of the
session. It cuts the incoming audio into utterances and stores every change
in Redis before it counts. Ended utterances wait in Redis until one
processor, the holder of the session's lease, turns them into output; the
lease makes sure that only one replica at a time does, whichever replica the
utterances arrived on, and that one that lost its lease cannot write.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from app.errors import LeaseLost, TolkError
from app.protocol import (
    AudioHeader,
    Final,
    Partial,
    StageError,
    StreamEnded,
    TranslationText,
)
from app.resampling import pcm16_to_float
from app.segmenter import EndedUtterance, Segmentation, Segmenter, SegmenterState
from app.stages import Stages
from app.store import AudioWrite, SessionConfig, SessionStore
from deployments.schema import Speech, TranscriptionRequest, Translation

logger = logging.getLogger("tolk.processor")

LEASE_MS = 10_000
_LEASE_RETRY_S = 0.1


class SessionProcessor:
    """Segments, transcribes, translates and speaks one session's audio, in order."""

    def __init__(
        self,
        config: SessionConfig,
        store: SessionStore,
        stages: Stages,
        segmenter: Segmenter,
        *,
        context_chars: int,
        on_idle: Callable[[SessionProcessor], None],
    ) -> None:
        self.config = config
        self._store = store
        self._stages = stages
        self._segmenter = segmenter
        self._context_chars = context_chars
        self._on_idle = on_idle
        self._state = SegmenterState()
        self._buffer = bytearray()
        self._context = ""
        self._ended = 0
        self._last_final = 0
        self._last_partial = ""
        # Utterance counts at each `end` the client sent, not yet announced.
        self._ends: list[int] = []
        self._wake = asyncio.Event()
        self._owner = ""
        self._input_lock = asyncio.Lock()
        self._emit_lock = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None
        self._partial: asyncio.Task[None] | None = None
        self._working = False
        self.connections = 0
        self.failure: TolkError | None = None

    @property
    def session_id(self) -> str:
        return self.config.session_id

    async def start(self) -> None:
        """Loads the session's input state and resumes unfinished utterances."""
        snapshot = await self._store.snapshot(self.session_id)
        self._state = SegmenterState.from_bytes(snapshot.segmenter_state)
        self._buffer = bytearray(snapshot.pending_audio)
        self._context = snapshot.context
        self._ended = snapshot.utterances
        if snapshot.unprocessed:
            logger.info(
                "session %s: %d utterances wait for processing",
                self.session_id,
                len(snapshot.unprocessed),
            )
            self._wake.set()
        self._worker = _detached(self._work(), f"tolk-worker-{self.session_id}")

    async def feed(self, pcm16: bytes, input_samples: int) -> None:
        """Takes PCM16 16 kHz audio; returns once its effect is stored."""
        # Limitation: one speaker at a time. Two connections sending audio at
        # once are cut into the same utterances, and with two detector states
        # when they are on two replicas.
        self._raise_if_failed()
        async with self._input_lock:
            # In a thread: a large frame costs the detector real time, and
            # other sockets on this replica must not wait for it.
            segmentation = await asyncio.to_thread(
                self._segmenter.feed, self._state, self._buffer, pcm16
            )
            await self._persist(segmentation, input_samples)

        if segmentation.partial_due:
            self._maybe_partial()

    async def end_of_stream(self) -> None:
        """Ends the utterance in progress and announces when all is processed."""
        self._raise_if_failed()
        async with self._input_lock:
            segmentation = self._segmenter.flush(self._state, self._buffer)
            await self._persist(segmentation, 0)
            self._ends.append(self._ended)
        self._wake.set()

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    @property
    def busy(self) -> bool:
        return self._working or self._wake.is_set() or bool(self._ends)

    async def aclose(self) -> None:
        for task in (self._worker, self._partial):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._worker, self._partial) if t), return_exceptions=True
        )

    async def _persist(self, segmentation: Segmentation, input_samples: int) -> None:
        write = AudioWrite(
            input_samples=input_samples,
            segmenter_state=self._state.to_bytes(),
            append=bytes(segmentation.append),
            replace=segmentation.replace,
            ended=tuple(u.to_bytes() for u in segmentation.ended),
        )
        numbers = await self._store.write_audio(self.session_id, write)
        if numbers:
            self._ended = max(numbers)
            self._wake.set()
            logger.debug("session %s: utterances %s ended", self.session_id, numbers)

    def _maybe_partial(self) -> None:
        if self._partial is not None and not self._partial.done():
            return
        number = self._ended + 1
        audio = pcm16_to_float(bytes(self._buffer))
        self._partial = _detached(
            self._transcribe_partial(number, audio), f"tolk-partial-{self.session_id}"
        )

    async def _transcribe_partial(self, number: int, audio: object) -> None:
        request = TranscriptionRequest(
            audio=audio,  # type: ignore[arg-type]
            language=self.config.source,
            prompt=self._context or None,
            partial=True,
        )
        try:
            transcript = await self._stages.transcribe(request)
        except Exception:
            # A partial is a preview: losing one is harmless, the final follows.
            logger.warning("session %s: partial transcript failed", self.session_id)
            return

        async with self._emit_lock:
            if number <= self._last_final or not transcript.text:
                return
            if transcript.text == self._last_partial:
                return
            self._last_partial = transcript.text
            try:
                await self._store.emit(
                    self.session_id, Partial(utterance=number, text=transcript.text)
                )
            except TolkError as error:
                # The worker meets the same error on its next write and stops.
                logger.warning(
                    "session %s: partial not sent: %s", self.session_id, error.code
                )

    async def _work(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._working = True
                try:
                    await self._drain()
                finally:
                    self._working = False
                if not self.busy:
                    self._on_idle(self)
        except TolkError as error:
            # Redis is gone or the session expired: what is unprocessed stays
            # in Redis for the processor that the next connection starts.
            self.failure = error
            logger.error(
                "session %s: processing stopped: %s", self.session_id, error.code
            )
            self._on_idle(self)

    async def _drain(self) -> None:
        """Processes the session's pending utterances while holding its lease."""
        while True:
            pending = await self._store.pending_utterances(self.session_id)
            if not pending and not self._ends:
                return
            async with self._lease() as held:
                if not held:
                    await asyncio.sleep(_LEASE_RETRY_S)
                    continue
                try:
                    await self._process_pending()
                except LeaseLost:
                    logger.warning("session %s: lease lost", self.session_id)
                    continue
            if not self._ends:
                return

    async def _process_pending(self) -> None:
        # Another replica may have processed utterances since this one did.
        self._context = await self._store.context(self.session_id)
        # Only the numbers are polled: the audio is read once, when processed.
        while pending := await self._store.pending_utterances(self.session_id):
            number = pending[0]
            data = await self._store.utterance(self.session_id, number)
            if data is None:
                continue
            await self._announce_ends(before=number)
            await self._process(number, EndedUtterance.from_bytes(data))
        await self._announce_ends(before=None)

    async def _announce_ends(self, before: int | None) -> None:
        """Emits `end_of_stream` for each `end` received before utterance `before`."""
        while self._ends and (before is None or self._ends[0] < before):
            await self._store.emit(
                self.session_id,
                StreamEnded(utterances=self._ends[0]),
                owner=self._owner,
            )
            self._ends.pop(0)

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[bool]:
        """Holds the lease, renewed in the background, if it can be had now."""
        owner = f"{secrets.token_hex(8)}"
        if not await self._store.acquire_lease(self.session_id, owner, LEASE_MS):
            yield False
            return
        self._owner = owner
        renewer = _detached(self._renew(owner), f"tolk-lease-{self.session_id}")
        try:
            yield True
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            await self._store.release_lease(self.session_id, owner)

    async def _renew(self, owner: str) -> None:
        while True:
            await asyncio.sleep(LEASE_MS / 3000)
            if not await self._store.acquire_lease(self.session_id, owner, LEASE_MS):
                return

    # Stage calls catch every error: Ray re-raises whatever the remote stage
    # raised, and one utterance's failure must not end the session's stream.
    async def _process(self, number: int, utterance: EndedUtterance) -> None:
        # Limitation: an utterance is forgotten only once all its output is
        # logged; if this replica dies or loses the lease in between, the next
        # holder processes it again and some of its events appear twice.
        source = self.config.source
        request = TranscriptionRequest(
            audio=pcm16_to_float(utterance.pcm),
            language=source,
            prompt=self._context or None,
        )
        try:
            transcript = await self._stages.transcribe(request)
        except Exception as error:
            await self._stage_failed(number, "transcription", None, error)
            await self._complete(number)
            return

        text = transcript.text.strip()
        async with self._emit_lock:
            self._last_final = number
            self._last_partial = ""
            await self._store.emit(
                self.session_id,
                owner=self._owner,
                event=Final(
                    utterance=number,
                    text=text,
                    language=transcript.language or source,
                    start_ms=utterance.start_ms,
                    end_ms=utterance.end_ms,
                ),
            )
        if text:
            await self._translate_and_speak(number, text)
            self._context = (self._context + " " + text).strip()[-self._context_chars :]
        await self._complete(number)

    async def _complete(self, number: int) -> None:
        await self._store.complete_utterance(
            self.session_id, number, self._context, owner=self._owner
        )

    async def _translate_and_speak(self, number: int, text: str) -> None:
        source, targets = self.config.source, self.config.targets
        translations = await asyncio.gather(
            *(self._stages.translate(text, source, target) for target in targets),
            return_exceptions=True,
        )
        spoken: list[tuple[str, asyncio.Task[Speech]]] = []
        for target, result in zip(targets, translations, strict=True):
            if isinstance(result, BaseException):
                await self._stage_failed(number, "translation", target, result)
                continue
            assert isinstance(result, Translation)
            await self._store.emit(
                self.session_id,
                TranslationText(utterance=number, language=target, text=result.text),
                owner=self._owner,
            )
            if result.text.strip():
                task = asyncio.ensure_future(
                    self._stages.synthesize(result.text, target)
                )
                spoken.append((target, task))

        for target, task in spoken:
            try:
                speech = await task
            except Exception as error:
                await self._stage_failed(number, "synthesis", target, error)
                continue
            header = AudioHeader(
                utterance=number,
                language=target,
                segment=0,
                sample_rate=speech.sample_rate,
                bytes=len(speech.pcm16),
            )
            await self._store.emit(
                self.session_id, header, speech.pcm16, owner=self._owner
            )

    async def _stage_failed(
        self, number: int, stage: str, language: str | None, error: BaseException
    ) -> None:
        logger.error(
            "session %s: %s failed on utterance %d: %s",
            self.session_id,
            stage,
            number,
            type(error).__name__,
            exc_info=error,
        )
        await self._store.emit(
            self.session_id,
            owner=self._owner,
            event=StageError(
                utterance=number,
                stage=stage,
                language=language,
                message=f"{stage} failed: {type(error).__name__}",
            ),
        )


def _detached(coroutine: object, name: str) -> asyncio.Task[None]:
    """A task outside the request's context, so a client disconnect won't cancel it.

    Ray Serve cancels the handle calls of a cancelled request; processing an
    utterance must finish whether or not the socket that sent it is still open.
    """
    return asyncio.get_running_loop().create_task(
        coroutine,  # type: ignore[arg-type]
        name=name,
        context=contextvars.Context(),
    )
