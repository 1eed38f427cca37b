"""Ray Serve deployment of the translation stage."""

from __future__ import annotations

import asyncio
import dataclasses

from ray import serve

from deployments.errors import StageError
from deployments.health import StageHealth
from deployments.logs import use_serve_logs
from deployments.schema import Translation
from deployments.translation.routing import (
    TextTranslator,
    TranslationJob,
    TranslatorSettings,
)
from deployments.usage import replica_usage

_DEFAULT_BATCH = TranslatorSettings()


@serve.deployment(
    # Room for a full batch being translated and the next one filling up.
    max_ongoing_requests=2 * _DEFAULT_BATCH.max_batch_size,
    ray_actor_options={"num_cpus": 0.25},
)
class Translator:
    """Translation stage: text in one language in, text in another out.

    Concurrent calls are batched, grouped by language pair, and each group
    goes to its backend in one call. Settings come from the bind argument
    and are replaced whole by `user_config`, both validated as
    `TranslatorSettings`.
    """

    def __init__(self, settings: dict | None = None) -> None:
        use_serve_logs()
        self._health = StageHealth("translation")
        parsed = TranslatorSettings.model_validate(settings or {})
        self._translator = TextTranslator(parsed)
        self._apply_batching(parsed)

    async def reconfigure(self, user_config: dict) -> None:
        """Apply new routes and batching; unchanged backends stay loaded.

        Raises:
            pydantic.ValidationError: unknown keys or invalid values.
        """
        settings = TranslatorSettings.model_validate(user_config)
        await asyncio.to_thread(self._translator.apply, settings)
        self._apply_batching(settings)

    async def translate(self, text: str, source: str, target: str) -> Translation:
        """Translate `text` from `source` into `target` (ISO 639-1 codes).

        Raises:
            UnsupportedLanguagePair: no available backend serves the pair.
            BackendFailed: the backend failed on the batch holding this text.
        """
        # Checked before batching so an unsupported pair fails at once.
        if source != target:
            self._translator.backend_for(source, target)
        result = await self._translate_batch(TranslationJob(text, source, target))
        if isinstance(result, StageError):
            raise result
        return dataclasses.replace(result, usage=replica_usage())

    def pairs(self) -> list[tuple[str, str]]:
        """(source, target) pairs servable now, sorted."""
        return sorted(self._translator.pairs())

    def check_health(self) -> None:
        """Fails while every batch fails, so Serve replaces the replica."""
        self._health.check()

    @serve.batch(max_batch_size=_DEFAULT_BATCH.max_batch_size)
    async def _translate_batch(
        self, jobs: list[TranslationJob]
    ) -> list[Translation | StageError]:
        with self._health.call() as outcome:
            results = await asyncio.to_thread(self._translator.translate_batch, jobs)
            outcome.judge_batch(results)
        return results

    def _apply_batching(self, settings: TranslatorSettings) -> None:
        self._translate_batch.set_max_batch_size(settings.max_batch_size)
        self._translate_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
