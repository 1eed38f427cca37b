"""The contract every translation backend fulfils."""

from __future__ import annotations

import abc

from pydantic import BaseModel, ConfigDict


class TranslationBackend(abc.ABC):
    """Translates batches of texts between the language pairs it serves.

    Constructors load everything a backend needs and raise
    `BackendUnavailable` when a package, binary or model is missing, so a
    backend that exists is ready. `translate` blocks; callers on an event loop
    run it in a thread.
    """

    name: str

    @abc.abstractmethod
    def pairs(self) -> set[tuple[str, str]]:
        """(source, target) ISO 639-1 code pairs this backend translates."""

    @abc.abstractmethod
    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate non-blank `texts`, returning one text per input in order.

        Raises:
            BackendFailed: the backend could not translate this batch.
        """


class BackendOptions(BaseModel):
    """Options of one backend; `name` tells which backend they are for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str

    def is_configured(self) -> bool:
        """False when the options leave the backend off on purpose."""
        return True
