"""The contract every speech synthesis backend fulfils."""

from __future__ import annotations

import abc

import numpy as np


class SynthesisBackend(abc.ABC):
    """Speaks text in the languages and voices it has.

    Constructors load everything a backend needs and raise
    `BackendUnavailable` when a package, binary or model is missing, so a
    backend that exists is ready. `synthesize` blocks; callers on an event
    loop run it in a thread.
    """

    name: str
    sample_rate: int
    """Rate of the audio `synthesize` returns, in Hz."""

    @abc.abstractmethod
    def languages(self) -> set[str]:
        """ISO 639-1 codes of the languages this backend speaks."""

    @abc.abstractmethod
    def voices(self) -> set[str]:
        """Names accepted as `voice`."""

    @abc.abstractmethod
    def default_voice(self, language: str) -> str:
        """The voice used for `language` when none is configured."""

    @abc.abstractmethod
    def synthesize(
        self, text: str, language: str, voice: str, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak non-blank `text`: (mono float32 or int16 samples, sample rate).

        Raises:
            UnspeakableText: the voice rejects this text.
            BackendFailed: the backend's runtime failed.
        """
