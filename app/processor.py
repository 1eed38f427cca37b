"""Turns a session's incoming audio into its output events.

One processor per session runs on the replica that holds the session's
speaking connection. It keeps a copy of the utterance in progress, but every
change reaches Redis before it counts: a processor started elsewhere from
`SessionStore.snapshot` continues exactly where this one stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable

from app.errors import TolkError
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

_END_OF_STREAM = None


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
        self._queue: asyncio.Queue[tuple[int, EndedUtterance] | None] = asyncio.Queue()
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
        for number in sorted(snapshot.unprocessed):
            utterance = EndedUtterance.from_bytes(snapshot.unprocessed[number])
            self._queue.put_nowait((number, utterance))
        if snapshot.unprocessed:
            logger.info(
                "session %s: resuming %d unfinished utterances",
                self.session_id,
                len(snapshot.unprocessed),
            )
        self._worker = _detached(self._work(), f"tolk-worker-{self.session_id}")

    async def feed(self, pcm16: bytes, input_samples: int) -> None:
        """Takes PCM16 16 kHz audio; returns once its effect is stored."""
        self._raise_if_failed()
        async with self._input_lock:
            segmentation = self._segmenter.feed(self._state, self._buffer, pcm16)
            await self._persist(segmentation, input_samples)

        if segmentation.partial_due:
            self._maybe_partial()

    async def end_of_stream(self) -> None:
        """Ends the utterance in progress and announces when all is processed."""
        self._raise_if_failed()
        async with self._input_lock:
            segmentation = self._segmenter.flush(self._state, self._buffer)
            await self._persist(segmentation, 0)
        self._queue.put_nowait(_END_OF_STREAM)

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    @property
    def busy(self) -> bool:
        return self._working or not self._queue.empty()

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
        for number, utterance in zip(numbers, segmentation.ended, strict=True):
            self._ended = number
            self._queue.put_nowait((number, utterance))
            logger.debug("session %s: utterance %d ended", self.session_id, number)

    def _maybe_partial(self) -> None:
        busy = self._partial is not None and not self._partial.done()
        if busy or not self._queue.empty():
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
                item = await self._queue.get()
                self._working = True
                try:
                    if item is _END_OF_STREAM:
                        await self._store.emit(
                            self.session_id, StreamEnded(utterances=self._ended)
                        )
                    else:
                        await self._process(*item)
                finally:
                    self._working = False
                if self._queue.empty():
                    self._on_idle(self)
        except TolkError as error:
            # Redis is gone or the session expired: what is unprocessed stays
            # in Redis for the processor that the next connection starts.
            self.failure = error
            logger.error(
                "session %s: processing stopped: %s", self.session_id, error.code
            )
            self._on_idle(self)

    # Stage calls catch every error: Ray re-raises whatever the remote stage
    # raised, and one utterance's failure must not end the session's stream.
    async def _process(self, number: int, utterance: EndedUtterance) -> None:
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
            await self._store.complete_utterance(self.session_id, number, self._context)
            return

        text = transcript.text.strip()
        async with self._emit_lock:
            self._last_final = number
            self._last_partial = ""
            await self._store.emit(
                self.session_id,
                Final(
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
        await self._store.complete_utterance(self.session_id, number, self._context)

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
            await self._store.emit(self.session_id, header, speech.pcm16)

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
            StageError(
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
