"""Ray Serve deployment of the speech recognition stage."""

from __future__ import annotations

import asyncio
import dataclasses

from ray import serve

from deployments.health import StageHealth
from deployments.logs import use_serve_logs
from deployments.recognition import SpeechRecognizer, TranscriberSettings
from deployments.schema import Transcript, TranscriptionRequest
from deployments.usage import replica_usage


@serve.deployment(
    # Each call holds the model for about a second of CPU; a few queued calls
    # keep the model busy without hiding overload from the autoscaler.
    max_ongoing_requests=4,
    ray_actor_options={"num_cpus": 0.75},
)
class Transcriber:
    """Speech recognition stage: utterance audio in, text out.

    Settings come from the bind argument and are replaced whole by the
    deployment's `user_config`, both validated as `TranscriberSettings`.
    """

    def __init__(self, settings: dict | None = None) -> None:
        use_serve_logs()
        self._health = StageHealth("transcription")
        self._recognizer = SpeechRecognizer(
            TranscriberSettings.model_validate(settings or {})
        )

    async def reconfigure(self, user_config: dict) -> None:
        """Apply new settings; the model reloads only if a load field changed.

        Raises:
            pydantic.ValidationError: unknown keys or invalid values.
        """
        settings = TranscriberSettings.model_validate(user_config)
        await asyncio.to_thread(self._recognizer.apply, settings)

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        """Recognise one utterance (16 kHz mono float32), final or partial."""
        with self._health.call():
            transcript = await asyncio.to_thread(self._recognizer.transcribe, request)
        return dataclasses.replace(transcript, usage=replica_usage())

    def languages(self) -> list[str]:
        """Language codes the loaded model recognises."""
        return self._recognizer.languages()

    def check_health(self) -> None:
        """Fails while the model fails every call, so Serve replaces the replica."""
        self._health.check()
