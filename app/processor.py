"""Turns a session's stored input into its output events.

A processor runs on each replica that holds a connection of the session. Its
intake stores incoming audio; its worker turns the session's jobs (ended
utterances, `end` requests) into output. Jobs wait in Redis until one
processor, the holder of the session's lease, takes them, whichever replica
the audio arrived on; the lease's token fences the writes of one that lost it.
Each job's output is logged step by step, once: a processor that takes over a
half-done job logs only what is missing.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from app.errors import LeaseLost, StoreUnavailable, TolkError
from app.intake import SessionIntake, Stored
from app.phrasing import PhrasingConfig, speech_segments
from app.protocol import (
    AudioHeader,
    Final,
    Partial,
    SessionEvent,
    StageError,
    StreamEnded,
    TranslationText,
)
from app.segmenter import EndedUtterance, Segmenter
from app.stages import Stages
from app.store import EndJob, SessionConfig, SessionStore, UtteranceJob
from app.tasks import cancel_and_wait
from deployments.schema import Transcript, TranscriptionRequest

logger = logging.getLogger("tolk.processor")

_T = TypeVar("_T")

LEASE_MS = 5_000
# How often a replica with connections looks for jobs nobody is working on,
# e.g. those of a replica that died.
POLL_S = 1.0


@dataclass(frozen=True)
class _EarlyFinal:
    """A final transcription started on an utterance that has likely ended."""

    number: int
    request: TranscriptionRequest
    task: asyncio.Task[Transcript]

    def serves(self, number: int, request: TranscriptionRequest) -> bool:
        """Whether its transcript is the one `request` would get."""
        mine = self.request
        return (
            number == self.number
            and request.language == mine.language
            and request.prompt == mine.prompt
            and np.array_equal(request.audio, mine.audio)
        )


class SessionProcessor:
    """Stores one session's audio and, while it holds the lease, outputs its jobs."""

    def __init__(
        self,
        config: SessionConfig,
        store: SessionStore,
        stages: Stages,
        segmenter: Segmenter,
        *,
        context_chars: int,
        phrasing: PhrasingConfig,
        on_idle: Callable[[SessionProcessor], None],
        on_event: Callable[[str], None] = lambda event_type: None,
        on_early_final: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.config = config
        self._store = store
        self._stages = stages
        self._context_chars = context_chars
        self._phrasing = phrasing
        self._on_idle = on_idle
        self._on_event = on_event
        self._on_early_final = on_early_final
        self.intake = SessionIntake(
            config.session_id,
            store,
            segmenter,
            on_partial=self._start_partial,
            on_likely_end=self._start_early_final,
        )
        self._context = ""
        self._last_partial = ""
        self._wake = asyncio.Event()
        self._token = ""
        self._worker: asyncio.Task[None] | None = None
        self._partial: asyncio.Task[None] | None = None
        self._early_final: _EarlyFinal | None = None
        # The utterance this processor last made or read the final of.
        # Limitation: a processor started by a reconnect or a takeover knows
        # none, so the session's next utterance gets no early final and its
        # final comes up to min_silence_s - likely_end_s later than usual.
        self._last_final = 0
        self._working = False
        self._finals_in_flight = 0
        self.connections = 0
        self.failure: TolkError | None = None

    @property
    def session_id(self) -> str:
        return self.config.session_id

    @property
    def busy(self) -> bool:
        """Whether it works on jobs, or was just told of new ones."""
        return self._working or self._wake.is_set()

    def start(self) -> None:
        self._worker = _detached(self._work(), f"tolk-worker-{self.session_id}")

    async def feed(self, pcm16: bytes, start: int) -> Stored:
        """Stores client audio from sample `start`; says where the input stands."""
        self._raise_if_failed()
        before = self.intake.utterances
        stored = await self.intake.feed(pcm16, start)
        if self.intake.utterances != before:
            self._wake.set()
        return stored

    async def configure(self, sample_rate: int, at: int) -> Stored:
        self._raise_if_failed()
        return await self.intake.configure(sample_rate, at)

    async def end_of_stream(self, at: int) -> Stored:
        """Ends the utterance in progress; `end_of_stream` follows its output."""
        self._raise_if_failed()
        stored = await self.intake.end(at)
        self._wake.set()
        return stored

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def aclose(self) -> None:
        early = self._early_final.task if self._early_final else None
        await cancel_and_wait(self._worker, self._partial, early)

    # Limitation: each partial transcribes the whole utterance so far again,
    # so a long utterance's partials cost more and more; max_utterance_s
    # bounds it.
    def _start_partial(self, number: int, pcm16: bytes) -> None:
        # A final being transcribed here goes first: a preview would slow it.
        early = self._early_final.task if self._early_final else None
        if self._finals_in_flight or _running(self._partial) or _running(early):
            return
        self._partial = _detached(
            self._transcribe_partial(number, pcm16), f"tolk-partial-{self.session_id}"
        )

    # Limitation: a pause longer than likely_end_s inside an utterance costs a
    # final-grade transcription that is thrown away when speech resumes: CPU
    # a busy recognizer would rather spend on other sessions' finals.
    def _start_early_final(self, number: int, utterance: EndedUtterance) -> None:
        """Transcribes an utterance that has likely ended, as its final would.

        The silence that makes an end certain takes longer than most finals'
        transcription, so the final is mostly ready when the utterance ends.
        The transcript is used only if the utterance ends with the same audio
        and its prompt is still the context then; otherwise it is wasted.
        """
        if self._finals_in_flight or self._last_final != number - 1:
            # The context the final will be prompted with is not known yet,
            # or the session's jobs are processed elsewhere.
            return
        request = TranscriptionRequest(
            audio=_samples(utterance.pcm),
            language=self.config.source,
            prompt=self._context or None,
        )
        earlier = self._early_final
        if earlier is not None and earlier.serves(number, request):
            return
        if earlier is not None:
            earlier.task.cancel()
            self._on_early_final("wasted")
        task = _detached(
            self._stages.transcribe(request), f"tolk-early-final-{self.session_id}"
        )
        # A failure surfaces when the final asks for the transcript.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._early_final = _EarlyFinal(number, request, task)

    async def _transcribe_partial(self, number: int, pcm16: bytes) -> None:
        request = TranscriptionRequest(
            audio=_samples(pcm16),
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

        # A preview of an utterance that has ended since is out of date.
        text = transcript.text
        if number <= self.intake.utterances or not text or text == self._last_partial:
            return
        self._last_partial = text
        try:
            # Dropped by the store if the utterance has ended meanwhile,
            # wherever its end arrived: a preview never follows its final.
            logged = await self._store.emit(
                self.session_id,
                Partial(utterance=number, text=text),
                while_open=number,
            )
            if logged:
                self._on_event("partial")
        except TolkError as error:
            logger.warning(
                "session %s: partial not sent: %s", self.session_id, error.code
            )

    async def _work(self) -> None:
        outage = 0
        try:
            while True:
                with suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._wake.wait()
                self._wake.clear()
                self._working = True
                try:
                    await self._drain()
                    outage = 0
                except StoreUnavailable as error:
                    # Jobs stay in Redis; try again once it answers.
                    outage += 1
                    if outage == 1:
                        logger.warning(
                            "session %s: store unreachable, processing waits: %s",
                            self.session_id,
                            error,
                        )
                    await asyncio.sleep(min(5.0, POLL_S * outage))
                    self._wake.set()
                finally:
                    self._working = False
                if self.connections == 0 and not self._wake.is_set():
                    self._on_idle(self)
        except TolkError as error:
            # The session expired or was closed: nothing is left to process.
            self.failure = error
            logger.info(
                "session %s: processing stopped: %s", self.session_id, error.code
            )
            self._on_idle(self)

    async def _drain(self) -> None:
        """Outputs the session's pending jobs if this replica can take the lease."""
        while True:
            async with self._lease() as held:
                if not held:
                    # No jobs, or another replica works on them: it is
                    # watched by polling.
                    return
                try:
                    await self._process_jobs()
                except LeaseLost:
                    logger.warning("session %s: lease lost", self.session_id)
                    return

    async def _process_jobs(self) -> None:
        """Outputs pending jobs in order, rendering one while transcribing the next.

        Transcription goes job by job, since each utterance's transcript is the
        next one's prompt. Translation and speech of an utterance run behind it,
        one utterance after the other, so a long reply being spoken does not
        hold back the transcript of what the speaker said since. A job is
        completed once all its output is logged.
        """
        rendering: asyncio.Task[None] | None = None
        taken = 0
        try:
            while True:
                if rendering is not None and rendering.done():
                    # Raises what made the render fail, e.g. a lost lease.
                    rendering.result()
                upcoming = await self._store.next_job(self.session_id, taken)
                if taken == 0:
                    # Another replica may have processed jobs since this one did.
                    self._context = upcoming.context
                job = upcoming.job
                if job is None:
                    if rendering is None or rendering.done():
                        break
                    await self._until_done_or_woken(rendering)
                    continue
                taken = job.seq
                if isinstance(job, EndJob):
                    if rendering is not None:
                        await rendering
                    await self._emit(
                        job.seq, "end", StreamEnded(utterances=job.utterances)
                    )
                    await self._complete(job.seq, self._context)
                    continue
                text, steps = await self._recognize(job, upcoming.steps)
                # Target languages added while the session runs apply from
                # the utterance taken next.
                targets = upcoming.targets or self.config.targets
                rendering = _detached(
                    self._render_and_complete(
                        job, text, steps, targets, self._context, rendering
                    ),
                    f"tolk-render-{self.session_id}",
                )
            if rendering is not None:
                await rendering
        finally:
            await cancel_and_wait(rendering)

    async def _until_done_or_woken(self, rendering: asyncio.Task[None]) -> None:
        """Waits for a render to end or for new jobs, whichever comes first."""
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {rendering, woken},
                timeout=POLL_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()
        self._wake.clear()

    async def _complete(self, seq: int, context: str) -> None:
        await self._store.complete_job(self.session_id, seq, context, owner=self._token)

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[bool]:
        """Holds the lease, renewed in the background, if jobs wait and it is free."""
        token = await self._store.acquire_lease(
            self.session_id, LEASE_MS, for_jobs=True
        )
        if token is None:
            yield False
            return
        self._token = token
        renewer = _detached(self._renew(token), f"tolk-lease-{self.session_id}")
        try:
            yield True
        finally:
            await cancel_and_wait(renewer)
            await self._store.release_lease(self.session_id, token)

    async def _renew(self, token: str) -> None:
        while True:
            await asyncio.sleep(LEASE_MS / 3000)
            if not await self._store.renew_lease(self.session_id, token, LEASE_MS):
                # The next fenced write fails and ends the work.
                return

    async def _emit(
        self, seq: int, step: str, event: SessionEvent, payload: bytes = b""
    ) -> int:
        event_id = await self._store.emit(
            self.session_id, event, payload, owner=self._token, step=f"j{seq}:{step}"
        )
        self._on_event(event.type)
        return event_id

    async def _logged_text(self, event_id: int | None) -> str | None:
        """The text of an event already in the log, when a job is taken over."""
        if event_id is None:
            return None
        record = await self._store.event(self.session_id, event_id)
        return None if record is None else str(json.loads(record.header)["text"])

    # Stage calls catch every error: Ray re-raises whatever the remote stage
    # raised, and one utterance's failure must not end the session's stream.
    async def _recognize(
        self, job: UtteranceJob, steps: dict[str, int]
    ) -> tuple[str | None, dict[str, int]]:
        """The job's transcript, from the log when it was made before; its steps.

        None when transcription failed. The session's context moves on here,
        so the next job is transcribed with this one's text as its prompt.
        """
        if steps:
            logger.info(
                "session %s: resuming utterance %d after %d logged steps",
                self.session_id,
                job.number,
                len(steps),
            )
        if "error:transcription" in steps:
            self._last_final = job.number
            return None, steps
        text = await self._logged_text(steps.get("final"))
        if text is None:
            text = await self._transcribe(job)
        if text:
            self._context = (self._context + " " + text).strip()[-self._context_chars :]
        self._last_final = job.number
        return text, steps

    async def _render_and_complete(
        self,
        job: UtteranceJob,
        text: str | None,
        steps: dict[str, int],
        targets: list[str],
        context: str,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Translates and speaks after the previous utterance, then completes.

        `context` is the session's context as of this utterance: stored with
        its completion, it is what a replica taking over starts from.
        """
        if previous is not None:
            # A failed predecessor fails this one too: the lease is gone.
            await previous
        if text:
            await self._translate_and_speak(job, text, steps, targets)
        await self._complete(job.seq, context)

    async def _transcribe(self, job: UtteranceJob) -> str | None:
        source, utterance = self.config.source, job.utterance
        request = TranscriptionRequest(
            audio=_samples(utterance.pcm),
            language=source,
            prompt=self._context or None,
        )
        self._finals_in_flight += 1
        try:
            transcript = await self._early_transcript(job.number, request)
            if transcript is None:
                transcript = await self._stages.transcribe(request)
        except Exception as error:
            await self._stage_failed(job, "transcription", None, error)
            return None
        finally:
            self._finals_in_flight -= 1

        text = transcript.text.strip()
        self._last_partial = ""
        final = Final(
            utterance=job.number,
            text=text,
            language=transcript.language or source,
            start_ms=utterance.start_ms,
            end_ms=utterance.end_ms,
            compute_ms=round(transcript.compute_s * 1000),
        )
        await self._emit(job.seq, "final", final)
        return text

    async def _early_transcript(
        self, number: int, request: TranscriptionRequest
    ) -> Transcript | None:
        """The early final's transcript if it answers `request`, else None."""
        early, self._early_final = self._early_final, None
        if early is None:
            return None
        if early.task.cancelled() or not early.serves(number, request):
            early.task.cancel()
            self._on_early_final("wasted")
            return None
        try:
            transcript = await early.task
        except Exception:
            # Transcribing again costs time, but the final must not be lost.
            logger.warning(
                "session %s: early final failed, transcribing again", self.session_id
            )
            self._on_early_final("failed")
            return None
        self._on_early_final("used")
        return transcript

    async def _translate_and_speak(
        self, job: UtteranceJob, text: str, steps: dict[str, int], targets: list[str]
    ) -> None:
        # Each language goes at its own pace: a slow translator or voice for
        # one does not hold back the speech of another.
        await _all(self._render(job, text, target, steps) for target in targets)

    async def _render(
        self, job: UtteranceJob, text: str, target: str, steps: dict[str, int]
    ) -> None:
        """Translates one utterance into `target`, then speaks it segment by segment."""
        if f"error:translation:{target}" in steps:
            return
        translated = await self._logged_text(steps.get(f"translation:{target}"))
        if translated is None:
            try:
                result = await self._stages.translate(text, self.config.source, target)
            except Exception as error:
                await self._stage_failed(job, "translation", target, error)
                return
            translated = result.text
            event = TranslationText(
                utterance=job.number,
                language=target,
                text=translated,
                compute_ms=round(result.compute_s * 1000),
            )
            await self._emit(job.seq, f"translation:{target}", event)

        if f"error:synthesis:{target}" in steps:
            return
        for index, segment in enumerate(speech_segments(translated, self._phrasing)):
            step = f"audio:{target}:{index}"
            if step in steps:
                continue
            try:
                speech = await self._stages.synthesize(segment, target)
            except Exception as error:
                await self._stage_failed(job, "synthesis", target, error)
                return
            header = AudioHeader(
                utterance=job.number,
                language=target,
                segment=index,
                sample_rate=speech.sample_rate,
                bytes=len(speech.pcm16),
                compute_ms=round(speech.compute_s * 1000),
            )
            await self._emit(job.seq, step, header, speech.pcm16)

    async def _stage_failed(
        self,
        job: UtteranceJob,
        stage: str,
        language: str | None,
        error: BaseException,
    ) -> None:
        logger.error(
            "session %s: %s failed on utterance %d: %s",
            self.session_id,
            stage,
            job.number,
            type(error).__name__,
            exc_info=error,
        )
        event = StageError(
            utterance=job.number,
            stage=stage,
            language=language,
            message=f"{stage} failed: {type(error).__name__}",
        )
        step = f"error:{stage}" + (f":{language}" if language else "")
        await self._emit(job.seq, step, event)


async def _all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Runs coroutines together; the first failure cancels the rest and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None


def _running(task: asyncio.Task[Any] | None) -> bool:
    return task is not None and not task.done()


def _samples(pcm16: bytes) -> np.ndarray:
    # The recognizer takes int16 as it takes float32: half the bytes to carry
    # through Ray, and no copy here.
    return np.frombuffer(pcm16, dtype="<i2")


def _detached(coroutine: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
    """A task outside the request's context, so a client disconnect won't cancel it.

    Ray Serve cancels the handle calls of a cancelled request; processing an
    utterance must finish whether or not the socket that sent it is still open.
    """
    return asyncio.get_running_loop().create_task(
        coroutine,
        name=name,
        context=contextvars.Context(),
    )
