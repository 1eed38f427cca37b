"""Choose a voice per language and speak with it, without Ray."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments.audio import mono_float32, pcm16_bytes, resample
from deployments.errors import BackendUnavailable, UnknownVoice, UnsupportedLanguage
from deployments.schema import Speech
from deployments.synthesis.backend import SynthesisBackend
from deployments.synthesis.espeak import EspeakBackend, EspeakOptions
from deployments.synthesis.kokoro import KokoroBackend, KokoroOptions
from deployments.synthesis.piper import PiperBackend, PiperOptions

logger = logging.getLogger("tolk.stage.tts")

BackendName = Literal["kokoro", "piper", "espeak"]
_BACKENDS: dict[str, Callable[[Any], SynthesisBackend]] = {
    "kokoro": KokoroBackend,
    "piper": PiperBackend,
    "espeak": EspeakBackend,
}
WILDCARD = "*"
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_STAGE = "speech synthesis"


class VoiceChoice(BaseModel):
    """The backend, voice and speaking rate for one language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName
    voice: str | None = Field(None, description="None: the backend's default")
    speed: float = Field(1.0, ge=0.5, le=2.0, description="1.0 is normal pace")


def _default_voices() -> dict[str, VoiceChoice]:
    # Chosen by how much of each option Whisper base reads back: Piper and
    # Kokoro tie in English, where Piper is seven times faster; Kokoro beats
    # espeak-ng in Spanish, Portuguese, French and Italian.
    kokoro = VoiceChoice(backend="kokoro")
    return {
        "en": VoiceChoice(backend="piper"),
        "es": kokoro,
        "fr": kokoro,
        "it": kokoro,
        "pt": kokoro,
        WILDCARD: VoiceChoice(backend="espeak"),
    }


class SynthesizerSettings(BaseModel):
    """Voices per target language ("*" for the rest) and backend options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    voices: dict[str, VoiceChoice] = Field(default_factory=_default_voices)
    kokoro: KokoroOptions = KokoroOptions()
    piper: PiperOptions = PiperOptions()
    espeak: EspeakOptions = EspeakOptions()
    sample_rate: int | None = Field(
        None,
        ge=8_000,
        le=48_000,
        description="resample all speech to this rate; None keeps each "
        "backend's own (kokoro 24 kHz, piper and espeak 22.05 kHz)",
    )

    @field_validator("voices")
    @classmethod
    def _check_languages(cls, voices: dict[str, VoiceChoice]) -> dict:
        for language in voices:
            if language != WILDCARD and not _LANGUAGE.match(language):
                raise ValueError(f"not an ISO 639-1 code or '*': {language!r}")
        return voices


@dataclass(frozen=True)
class _Voice:
    backend: SynthesisBackend
    choice: VoiceChoice


class SpeechSynthesizer:
    """Speaks text with the voice configured for its language.

    Backends that cannot load are logged once and left out, and their
    languages fall back to the "*" entry. `synthesize` blocks.
    """

    def __init__(self, settings: SynthesizerSettings | None = None) -> None:
        self._backends: dict[str, SynthesisBackend | None] = {}
        self._voices: dict[str, _Voice] = {}
        self._sample_rate: int | None = None
        self.apply(settings or SynthesizerSettings())

    def apply(self, settings: SynthesizerSettings) -> None:
        """Use new settings, keeping backends whose options did not change.

        Raises:
            UnknownVoice: a voice its backend does not have.
            UnsupportedLanguage: a language its backend does not speak.
        """
        backends: dict[str, SynthesisBackend | None] = {}
        for choice in settings.voices.values():
            key = _backend_key(settings, choice)
            if key not in backends:
                backends[key] = (
                    self._backends[key]
                    if key in self._backends
                    else _start(choice.backend, getattr(settings, choice.backend))
                )
        voices: dict[str, _Voice] = {}
        for language, choice in settings.voices.items():
            backend = backends[_backend_key(settings, choice)]
            if backend is not None:
                _check_choice(language, choice, backend)
                voices[language] = _Voice(backend, choice)
        rate = settings.sample_rate
        self._backends, self._voices, self._sample_rate = backends, voices, rate

    def languages(self) -> list[str]:
        """Languages some available backend speaks under these settings."""
        voices = self._voices
        spoken = {language for language in voices if language != WILDCARD}
        if WILDCARD in voices:
            spoken |= voices[WILDCARD].backend.languages()
        return sorted(spoken)

    def synthesize(self, text: str, language: str) -> Speech:
        """Speak `text` as mono PCM16; text without a letter or digit gives none.

        Raises:
            UnsupportedLanguage: no available voice speaks `language`.
            UnspeakableText: the voice rejects this text.
            BackendFailed: the backend's runtime failed.
        """
        voice, target_rate = self._voice_for(language), self._sample_rate
        backend, choice = voice.backend, voice.choice
        name = choice.voice or backend.default_voice(language)
        # Recognizers write music as "♪" and hesitation as "...": nothing to say.
        if not any(character.isalnum() for character in text):
            return Speech(
                b"", target_rate or backend.sample_rate, language, backend.name, name
            )

        started = time.perf_counter()
        audio, rate = backend.synthesize(text, language, name, choice.speed)
        if target_rate is not None and target_rate != rate:
            audio, rate = resample(mono_float32(audio), rate, target_rate), target_rate
        pcm16 = pcm16_bytes(audio)
        compute_s = time.perf_counter() - started
        logger.debug(
            "spoke %.2f s of %s with %s in %.3f s",
            len(pcm16) / 2 / rate,
            language,
            backend.name,
            compute_s,
        )
        return Speech(pcm16, rate, language, backend.name, name, compute_s=compute_s)

    def _voice_for(self, language: str) -> _Voice:
        voices = self._voices
        if language in voices:
            return voices[language]
        fallback = voices.get(WILDCARD)
        if fallback is not None and language in fallback.backend.languages():
            return fallback
        raise UnsupportedLanguage(language, _STAGE, self.languages())


def _backend_key(settings: SynthesizerSettings, choice: VoiceChoice) -> str:
    options = getattr(settings, choice.backend)
    return f"{choice.backend}:{options.model_dump_json()}"


def _start(name: str, options: BaseModel) -> SynthesisBackend | None:
    try:
        return _BACKENDS[name](options)
    except BackendUnavailable as error:
        # Expected where an optional backend is not installed.
        logger.warning("speech synthesis backend skipped: %s", error)
        return None


def _check_choice(
    language: str, choice: VoiceChoice, backend: SynthesisBackend
) -> None:
    if choice.voice is not None and choice.voice not in backend.voices():
        raise UnknownVoice(choice.voice, backend.name, sorted(backend.voices()))
    if language != WILDCARD and language not in backend.languages():
        raise UnsupportedLanguage(
            language, f"{_STAGE} backend {backend.name!r}", sorted(backend.languages())
        )
