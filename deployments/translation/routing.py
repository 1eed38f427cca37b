"""Choose a translation backend per language pair and run it, without Ray."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments.errors import (
    BackendUnavailable,
    StageError,
    UnsupportedLanguagePair,
)
from deployments.schema import Translation
from deployments.translation.apertium import ApertiumBackend, ApertiumOptions
from deployments.translation.backend import BackendOptions, TranslationBackend
from deployments.translation.bergamot import BergamotBackend, BergamotOptions
from deployments.translation.transformers_seq2seq import (
    TransformersBackend,
    TransformersOptions,
)

logger = logging.getLogger("tolk.stage.translation")

AnyBackendOptions = Annotated[
    ApertiumOptions | BergamotOptions | TransformersOptions,
    Field(discriminator="name"),
]
_BACKENDS: dict[str, Callable[[Any], TranslationBackend]] = {
    "apertium": ApertiumBackend,
    "bergamot": BergamotBackend,
    "transformers": TransformersBackend,
}
WILDCARD = "*"
_PAIR_PATTERN = re.compile(r"^(\*|[a-z]{2,3})-(\*|[a-z]{2,3})$")


class TranslationRoute(BaseModel):
    """Sends the pairs matching `pair` to `backend`.

    `pair` is "source-target" with ISO 639-1 codes, either side may be "*",
    and "*" alone matches every pair.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pair: str
    backend: AnyBackendOptions

    @field_validator("pair")
    @classmethod
    def _check_pair(cls, pair: str) -> str:
        if pair != WILDCARD and not _PAIR_PATTERN.match(pair):
            raise ValueError(f"pair must look like 'en-es', 'en-*' or '*': {pair!r}")
        return pair

    def matches(self, source: str, target: str) -> bool:
        """Whether this route claims the pair."""
        if self.pair == WILDCARD:
            return True
        route_source, route_target = self.pair.split("-")
        return route_source in (WILDCARD, source) and route_target in (
            WILDCARD,
            target,
        )


def _default_routes() -> list[TranslationRoute]:
    return [
        TranslationRoute(pair="en-pt", backend=BergamotOptions()),
        TranslationRoute(pair="pt-en", backend=BergamotOptions()),
        TranslationRoute(pair="en-es", backend=ApertiumOptions()),
        TranslationRoute(pair="es-en", backend=ApertiumOptions()),
        # Serves whatever the others do not once a model is set.
        TranslationRoute(pair=WILDCARD, backend=TransformersOptions()),
    ]


class TranslatorSettings(BaseModel):
    """Routes tried in order, and how the deployment batches requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[TranslationRoute] = Field(default_factory=_default_routes)
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(
        0.01, ge=0.0, description="how long a batch waits to fill up"
    )


@dataclass(frozen=True)
class TranslationJob:
    """One text waiting in a batch to be translated."""

    text: str
    source: str
    target: str


class TextTranslator:
    """Translates texts with the first route that serves their pair.

    Backends that cannot load are logged once and left out; the pairs they
    would have served fall through to later routes or are unsupported.
    `translate` blocks.
    """

    def __init__(self, settings: TranslatorSettings | None = None) -> None:
        self._backends: dict[str, TranslationBackend | None] = {}
        self._table: dict[tuple[str, str], TranslationBackend] = {}
        self.apply(settings or TranslatorSettings())

    def apply(self, settings: TranslatorSettings) -> None:
        """Use new routes, keeping backends whose options did not change.

        A backend that could not start is not retried until the process
        restarts, so its warning appears once.
        """
        backends: dict[str, TranslationBackend | None] = {}
        table: dict[tuple[str, str], TranslationBackend] = {}
        for route in settings.routes:
            key = route.backend.model_dump_json()
            if key not in backends:
                backends[key] = (
                    self._backends[key]
                    if key in self._backends
                    else self._start(route.backend)
                )
            backend = backends[key]
            if backend is None:
                continue
            # Earlier routes win, so a pair keeps the first backend it met.
            for pair in backend.pairs():
                if route.matches(*pair):
                    table.setdefault(pair, backend)
        self._backends, self._table = backends, table

    def pairs(self) -> set[tuple[str, str]]:
        """(source, target) pairs some available backend serves now."""
        return set(self._table)

    def backend_for(self, source: str, target: str) -> TranslationBackend:
        """The backend of the first route serving the pair.

        Raises:
            UnsupportedLanguagePair: no available route serves it.
        """
        backend = self._table.get((source, target))
        if backend is None:
            raise UnsupportedLanguagePair(source, target)
        return backend

    def translate(
        self, texts: list[str], source: str, target: str
    ) -> tuple[list[str], str, float]:
        """Translate texts of one pair: (translations, backend name, seconds).

        A text translated into its own language comes back unchanged, and
        blank texts come back empty without reaching a backend.

        Raises:
            UnsupportedLanguagePair: no available route serves the pair.
            BackendFailed: the backend failed on this batch.
        """
        if source == target:
            return list(texts), "identity", 0.0
        backend = self.backend_for(source, target)
        wanted = [index for index, text in enumerate(texts) if text.strip()]
        results = [""] * len(texts)
        if not wanted:
            return results, backend.name, 0.0
        started = time.perf_counter()
        translated = backend.translate([texts[i] for i in wanted], source, target)
        compute_s = time.perf_counter() - started
        for index, text in zip(wanted, translated, strict=True):
            results[index] = text
        logger.debug(
            "translated %d texts %s->%s with %s in %.3f s",
            len(wanted),
            source,
            target,
            backend.name,
            compute_s,
        )
        return results, backend.name, compute_s

    def translate_batch(
        self, jobs: list[TranslationJob]
    ) -> list[Translation | StageError]:
        """Translate jobs of any pairs, one backend call per pair.

        A pair that fails yields its error in the places of its own jobs, so
        the other pairs of the batch still succeed. `compute_s` of each
        translation is the time of the backend call that carried it.
        """
        results: dict[int, Translation | StageError] = {}

        def pair_of(index: int) -> tuple[str, str]:
            return jobs[index].source, jobs[index].target

        ordered = sorted(range(len(jobs)), key=pair_of)
        for (source, target), group in itertools.groupby(ordered, key=pair_of):
            members = list(group)
            try:
                texts, backend, compute_s = self.translate(
                    [jobs[index].text for index in members], source, target
                )
            except StageError as error:
                for index in members:
                    results[index] = error
                continue
            for index, text in zip(members, texts, strict=True):
                results[index] = Translation(text, source, target, backend, compute_s)
        return [results[index] for index in range(len(jobs))]

    @staticmethod
    def _start(options: BackendOptions) -> TranslationBackend | None:
        if not options.is_configured():
            logger.info(
                "translation backend %s has no model; it stays off", options.name
            )
            return None
        try:
            return _BACKENDS[options.name](options)
        except BackendUnavailable as error:
            # Expected where an optional backend is not installed.
            logger.warning("translation backend skipped: %s", error)
            return None
