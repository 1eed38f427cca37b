"""Ray Serve deployment of the speech synthesis stage."""

from __future__ import annotations

import asyncio
import dataclasses

from ray import serve

from deployments.health import StageHealth
from deployments.logs import use_serve_logs
from deployments.schema import Speech
from deployments.synthesis.voices import SpeechSynthesizer, SynthesizerSettings
from deployments.usage import replica_usage


@serve.deployment(
    # A sentence costs a few tenths of a second of CPU; a short queue keeps
    # latency visible to the autoscaler.
    max_ongoing_requests=4,
    ray_actor_options={"num_cpus": 0.5},
)
class Synthesizer:
    """Speech synthesis stage: text in a language in, PCM16 speech out.

    Settings come from the bind argument and are replaced whole by the
    deployment's `user_config`, both validated as `SynthesizerSettings`.
    """

    def __init__(self, settings: dict | None = None) -> None:
        use_serve_logs()
        self._health = StageHealth("synthesis")
        self._synthesizer = SpeechSynthesizer(
            SynthesizerSettings.model_validate(settings or {})
        )

    async def reconfigure(self, user_config: dict) -> None:
        """Apply new voices; backends whose options did not change stay loaded.

        Raises:
            pydantic.ValidationError: unknown keys or invalid values.
            UnknownVoice: a voice its backend does not have.
            UnsupportedLanguage: a language its backend does not speak.
        """
        settings = SynthesizerSettings.model_validate(user_config)
        await asyncio.to_thread(self._synthesizer.apply, settings)

    async def synthesize(self, text: str, language: str) -> Speech:
        """Speak `text` in `language` (ISO 639-1) as mono PCM16.

        Raises:
            UnsupportedLanguage: no available voice speaks `language`.
            UnspeakableText: the voice rejects this text.
            BackendFailed: the backend's runtime failed.
        """
        with self._health.call():
            speech = await asyncio.to_thread(
                self._synthesizer.synthesize, text, language
            )
        return dataclasses.replace(speech, usage=replica_usage())

    def languages(self) -> list[str]:
        """Languages some available voice speaks, sorted."""
        return self._synthesizer.languages()

    def check_health(self) -> None:
        """Fails while every call fails, so Serve replaces the replica."""
        self._health.check()
