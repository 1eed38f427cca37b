"""The model stages as the ingress sees them: three awaitable calls."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

from ray.serve.handle import DeploymentHandle

from app.metrics import IngressMetrics
from app.usage import UsageLedger
from deployments.schema import Speech, Transcript, TranscriptionRequest, Translation


class Stages(Protocol):
    async def transcribe(self, request: TranscriptionRequest) -> Transcript: ...

    async def translate(self, text: str, source: str, target: str) -> Translation: ...

    async def synthesize(self, text: str, language: str) -> Speech: ...


@dataclass(frozen=True)
class Capabilities:
    """What the stages can serve right now."""

    transcription: list[str]
    pairs: list[tuple[str, str]]
    speech: list[str]

    def refusal(self, source: str, targets: list[str]) -> str | None:
        """Why a session with these languages cannot be served, or None."""
        if source not in self.transcription:
            return f"speech recognition does not know {source!r}"
        for target in targets:
            if (source, target) not in self.pairs:
                return f"no translation from {source!r} to {target!r} is available"
            if target not in self.speech and "*" not in self.speech:
                return f"no voice speaks {target!r}"
        return None


# A stage that answered a real call this recently is ready without being
# asked: under load its queue may hold a readiness question past its timeout.
_ANSWERED_RECENTLY_S = 30.0


class ServeStages:
    """Calls the stage deployments through their Ray Serve handles."""

    def __init__(
        self,
        transcriber: DeploymentHandle,
        translator: DeploymentHandle,
        synthesizer: DeploymentHandle,
        ledger: UsageLedger,
        metrics: IngressMetrics,
    ) -> None:
        self._transcriber = transcriber
        self._translator = translator
        self._synthesizer = synthesizer
        self._ledger = ledger
        self._metrics = metrics
        self._answered: dict[str, float] = {}

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        # Partials are timed apart: they are many, cheaper, and may be dropped.
        stage = "partial_transcription" if request.partial else "transcription"
        with self._metrics.stage_call(stage):
            transcript: Transcript = await self._transcriber.transcribe.remote(request)
        self._metrics.stage_compute(stage, transcript.compute_s)
        self._answered["transcription"] = time.monotonic()
        self._ledger.note("transcription", transcript.usage)
        return transcript

    async def translate(self, text: str, source: str, target: str) -> Translation:
        with self._metrics.stage_call("translation"):
            result: Translation = await self._translator.translate.remote(
                text, source, target
            )
        self._metrics.stage_compute("translation", result.compute_s)
        self._answered["translation"] = time.monotonic()
        self._ledger.note("translation", result.usage)
        return result

    async def synthesize(self, text: str, language: str) -> Speech:
        with self._metrics.stage_call("synthesis"):
            speech: Speech = await self._synthesizer.synthesize.remote(text, language)
        self._metrics.stage_compute("synthesis", speech.compute_s)
        self._answered["synthesis"] = time.monotonic()
        self._ledger.note("synthesis", speech.usage)
        return speech

    async def readiness(self, timeout_s: float) -> dict[str, str]:
        """ "ok" for each stage that answered lately or answers within `timeout_s`."""
        calls = {
            "transcription": self._transcriber.languages,
            "translation": self._translator.pairs,
            "synthesis": self._synthesizer.languages,
        }
        now = time.monotonic()
        asked = {
            stage: call
            for stage, call in calls.items()
            if now - self._answered.get(stage, float("-inf")) >= _ANSWERED_RECENTLY_S
        }
        answers = await asyncio.gather(
            *(_answer(call, timeout_s) for call in asked.values())
        )
        states = dict.fromkeys(calls, "ok")
        states.update(zip(asked, answers, strict=True))
        return states

    async def capabilities(self) -> Capabilities:
        transcription = await self._transcriber.languages.remote()
        pairs = await self._translator.pairs.remote()
        speech = await self._synthesizer.languages.remote()
        return Capabilities(
            transcription=sorted(transcription),
            pairs=sorted((source, target) for source, target in pairs),
            speech=sorted(speech),
        )


async def _answer(method: Any, timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            await method.remote()
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as error:
        # Whatever the stage raised, or Ray's error for a dead replica.
        return f"failed: {type(error).__name__}"
    return "ok"
