"""Speech recognition with faster-whisper, usable with or without Ray."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from faster_whisper import WhisperModel
from faster_whisper.transcribe import Segment
from pydantic import BaseModel, ConfigDict, Field

from deployments.audio import mono_float32
from deployments.errors import UnsupportedLanguage
from deployments.models import WHISPER_BASE, resolve_whisper_model
from deployments.schema import (
    ASR_SAMPLE_RATE,
    Transcript,
    TranscriptionRequest,
    TranscriptSegment,
)

logger = logging.getLogger("tolk.stage.asr")

# Settings that are baked into a loaded model; changing one means reloading.
_LOAD_FIELDS = ("model", "device", "compute_type", "cpu_threads")


class TranscriberSettings(BaseModel):
    """How the recognizer loads its model and decodes speech."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        WHISPER_BASE,
        description="'whisper-base', 'whisper-tiny.en', or any faster-whisper "
        "model size, hub id or folder path",
    )
    device: Literal["cpu", "cuda", "auto"] = "auto"
    compute_type: str = Field("int8", description="CTranslate2 compute type")
    cpu_threads: int = Field(
        2, ge=0, description="threads for CPU decoding; 0 lets CTranslate2 pick"
    )
    beam_size: int = Field(5, ge=1, description="beam width of final passes")
    no_speech_threshold: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="a segment more likely silence than this is dropped when "
        "its average log probability is also below log_prob_threshold",
    )
    log_prob_threshold: float = Field(-1.0, le=0.0)
    compression_ratio_threshold: float = Field(
        2.4, gt=0.0, description="text that compresses more than this is a loop"
    )


class SpeechRecognizer:
    """Turns utterances into text with one faster-whisper model.

    `transcribe` blocks; callers on an event loop run it in a thread. It is
    safe to call from several threads, also while `apply` swaps the model.
    """

    def __init__(self, settings: TranscriberSettings | None = None) -> None:
        self._swap_lock = threading.Lock()
        self._settings = settings or TranscriberSettings()
        self._model = self._load(self._settings)

    @property
    def settings(self) -> TranscriberSettings:
        """The settings in force."""
        return self._settings

    def apply(self, settings: TranscriberSettings) -> None:
        """Use new settings, reloading the model only when a load field changed."""
        with self._swap_lock:
            if any(
                getattr(settings, name) != getattr(self._settings, name)
                for name in _LOAD_FIELDS
            ):
                self._model = self._load(settings)
            self._settings = settings

    def languages(self) -> list[str]:
        """Language codes the loaded model can recognise."""
        return list(self._model.supported_languages)

    def transcribe(self, request: TranscriptionRequest) -> Transcript:
        """Recognise one utterance of 16 kHz mono audio.

        Raises:
            InvalidAudio: the audio is not one channel of samples.
            UnsupportedLanguage: the forced language is not one the model knows.
        """
        audio = mono_float32(request.audio)
        model, settings = self._model, self._settings
        if request.language and request.language not in model.supported_languages:
            raise UnsupportedLanguage(
                request.language, "speech recognition", self.languages()
            )
        if audio.size == 0:
            return Transcript(text="", language=request.language or "")

        started = time.perf_counter()
        segments, info = model.transcribe(
            audio,
            language=request.language,
            initial_prompt=request.prompt or None,
            # The ingress cut the utterance with its own VAD, and each
            # utterance stands alone so one misheard phrase cannot spread.
            vad_filter=False,
            condition_on_previous_text=False,
            no_speech_threshold=settings.no_speech_threshold,
            log_prob_threshold=settings.log_prob_threshold,
            compression_ratio_threshold=settings.compression_ratio_threshold,
            **_decoding_effort(settings, request.partial),
        )
        # Decoding happens while the generator is consumed.
        kept = [segment for segment in segments if _is_speech(segment, settings)]
        compute_s = time.perf_counter() - started

        logger.debug(
            "transcribed %.2f s of audio in %.3f s (partial=%s, segments=%d)",
            audio.size / ASR_SAMPLE_RATE,
            compute_s,
            request.partial,
            len(kept),
        )
        return Transcript(
            text=" ".join(segment.text.strip() for segment in kept).strip(),
            language=request.language or info.language,
            segments=[
                TranscriptSegment(s.start, s.end, s.text.strip()) for s in kept
            ],
            compute_s=compute_s,
        )

    @staticmethod
    def _load(settings: TranscriberSettings) -> WhisperModel:
        started = time.perf_counter()
        model = WhisperModel(
            resolve_whisper_model(settings.model),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )
        logger.info(
            "loaded recognizer %s on %s (%s) in %.2f s",
            settings.model,
            settings.device,
            settings.compute_type,
            time.perf_counter() - started,
        )
        return model


def _decoding_effort(settings: TranscriberSettings, partial: bool) -> dict:
    if partial:
        # Partials are replaced by the final pass, so they take the cheapest
        # path: greedy, no timestamp tokens, no temperature fallback.
        return {"beam_size": 1, "without_timestamps": True, "temperature": 0.0}
    return {"beam_size": settings.beam_size}


def _is_speech(segment: Segment, settings: TranscriberSettings) -> bool:
    if (
        segment.no_speech_prob > settings.no_speech_threshold
        and segment.avg_logprob < settings.log_prob_threshold
    ):
        return False
    # Without temperature fallback a looping decode is kept as is; drop it.
    return segment.compression_ratio <= settings.compression_ratio_threshold
