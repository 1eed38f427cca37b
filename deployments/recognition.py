"""Speech recognition with faster-whisper, usable with or without Ray."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Literal

import numpy as np
from faster_whisper.transcribe import Segment, TranscriptionInfo
from pydantic import BaseModel, ConfigDict, Field

from deployments.audio import mono_float32
from deployments.errors import ModelUnavailable, UnsupportedLanguage
from deployments.models import WHISPER_BASE, resolve_whisper_model
from deployments.schema import (
    ASR_SAMPLE_RATE,
    Transcript,
    TranscriptionRequest,
    TranscriptSegment,
)
from deployments.whisper_window import WindowedWhisper

logger = logging.getLogger("tolk.stage.asr")

# Settings that are baked into a loaded model; changing one means reloading.
_RUNTIME_FIELDS = ("device", "compute_type", "cpu_threads")
_LOAD_FIELDS = ("model", *_RUNTIME_FIELDS)
_PARTIAL_LOAD_FIELDS = ("partial_model", *_RUNTIME_FIELDS)
# Whisper decodes 30 s windows of at most 448 tokens, and a full prompt with
# its start tokens takes 228 of them; faster-whisper rejects more.
_WINDOW_S = 30.0
_MAX_NEW_TOKENS = 220
# Start-of-transcript, language, task and timestamp tokens of a short clip.
_TOKEN_ALLOWANCE = 16
# A long prompt slows every decode and tempts the decoder to copy it; the
# last sentence or two carry the names and style worth priming with.
_PROMPT_TAIL_CHARS = 240


class TranscriberSettings(BaseModel):
    """How the recognizer loads its model and decodes speech."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        WHISPER_BASE,
        description="'whisper-base', 'whisper-tiny.en', or any faster-whisper "
        "model size, hub id or folder path",
    )
    partial_model: str | None = Field(
        None,
        description="a smaller, faster model for partial transcripts of the "
        "languages it knows (e.g. 'whisper-tiny.en' for English); None uses "
        "`model` for partials too",
    )
    partial_model_finals: bool = Field(
        False,
        description="final passes of the languages `partial_model` knows by it "
        "too; worth it where it is as accurate, as whisper-tiny.en is on clear "
        "English speech",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="'auto' takes a GPU when the replica was given one"
    )
    compute_type: str = Field("int8", description="CTranslate2 compute type")
    cpu_threads: int = Field(
        2, ge=0, description="threads for CPU decoding; 0 lets CTranslate2 pick"
    )
    beam_size: int = Field(5, ge=1, description="beam width of final passes")
    no_speech_threshold: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="no-speech probability above which a segment is silence "
        "unless its average log probability says otherwise",
    )
    log_prob_threshold: float = Field(
        -1.0,
        le=0.0,
        description="a final pass whose average log probability is below "
        "this is decoded again at a higher temperature",
    )
    silence_log_prob_threshold: float = Field(
        -0.5,
        le=0.0,
        description="a segment above no_speech_threshold whose average log "
        "probability is below this is dropped as silence",
    )
    compression_ratio_threshold: float = Field(
        2.4, gt=0.0, description="text that compresses more than this is a loop"
    )
    window_margin_s: float | None = Field(
        10.0,
        ge=0.0,
        le=30.0,
        description="seconds of padding kept after the audio in the encoder's "
        "window: Whisper pads every window to 30 s and the encoder's cost "
        "follows the window, so a short one transcribes a short utterance "
        "about twice as fast; below about 5 s the decoder starts to lose the "
        "end of speech, and shorter margins read words into noise more often; "
        "None keeps the full 30 s window",
    )
    window_doubt_threshold: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="no-speech probability of a segment, read in a short "
        "window, above which the utterance is transcribed again in the full "
        "30 s window, where Whisper tells noise from speech more reliably",
    )
    max_tokens_per_second: float = Field(
        12.0,
        gt=0.0,
        description="decoding stops after this many tokens per "
        "second of audio, which bounds the cost of a looping decode",
    )


class SpeechRecognizer:
    """Turns utterances into text with one faster-whisper model.

    `transcribe` blocks; callers on an event loop run it in a thread. It is
    safe to call from several threads, also while `apply` swaps the model.
    """

    def __init__(self, settings: TranscriberSettings | None = None) -> None:
        """Load the model the settings name.

        Raises:
            ModelUnavailable: the model cannot be found or loaded.
        """
        self._swap_lock = threading.Lock()
        self._settings = settings or TranscriberSettings()
        self._model = self._load(self._settings.model, self._settings)
        self._partial_model = self._load_partial(self._settings)

    @property
    def settings(self) -> TranscriberSettings:
        """The settings in force."""
        return self._settings

    def apply(self, settings: TranscriberSettings) -> None:
        """Use new settings, reloading the model only when a load field changed.

        Raises:
            ModelUnavailable: the new model cannot be loaded; the old one stays.
        """
        with self._swap_lock:
            model, partial_model = self._model, self._partial_model
            if self._changed(settings, _LOAD_FIELDS):
                model = self._load(settings.model, settings)
            if self._changed(settings, _PARTIAL_LOAD_FIELDS):
                partial_model = self._load_partial(settings)
            for loaded in (model, partial_model):
                if loaded is not None:
                    loaded.margin_s = settings.window_margin_s
            self._model, self._partial_model = model, partial_model
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
        reference = settings.model
        partial_model = self._partial_model
        if (
            (request.partial or settings.partial_model_finals)
            and partial_model is not None
            and settings.partial_model is not None
            and request.language in partial_model.supported_languages
        ):
            model, reference = partial_model, settings.partial_model
        if audio.size == 0:
            return Transcript(text="", language=request.language or "")

        duration_s = audio.size / ASR_SAMPLE_RATE
        started = time.perf_counter()
        kept, info = self._decode(model, audio, request, settings, duration_s)
        if model.margin_s is not None and any(
            segment.no_speech_prob > settings.window_doubt_threshold for segment in kept
        ):
            # A short window makes the decoder likelier to read words into
            # noise; where it doubts there was speech, the full window decides.
            with model.full_window():
                kept, info = self._decode(model, audio, request, settings, duration_s)
        compute_s = time.perf_counter() - started

        logger.debug(
            "transcribed %.2f s of audio in %.3f s (partial=%s, segments=%d)",
            duration_s,
            compute_s,
            request.partial,
            len(kept),
        )
        return Transcript(
            text=" ".join(segment.text.strip() for segment in kept).strip(),
            language=request.language or info.language,
            segments=[TranscriptSegment(s.start, s.end, s.text.strip()) for s in kept],
            compute_s=compute_s,
            model=reference,
        )

    @staticmethod
    def _decode(
        model: WindowedWhisper,
        audio: np.ndarray,
        request: TranscriptionRequest,
        settings: TranscriberSettings,
        duration_s: float,
    ) -> tuple[list[Segment], TranscriptionInfo]:
        segments, info = model.transcribe(
            audio,
            language=request.language,
            initial_prompt=_prompt_tail(request.prompt),
            # The ingress cut the utterance with its own VAD, and each
            # utterance stands alone so one misheard phrase cannot spread.
            vad_filter=False,
            condition_on_previous_text=False,
            no_speech_threshold=settings.no_speech_threshold,
            log_prob_threshold=settings.log_prob_threshold,
            compression_ratio_threshold=settings.compression_ratio_threshold,
            **_decoding_effort(settings, request.partial, duration_s),
        )
        # Decoding happens while the generator is consumed.
        return [segment for segment in segments if _is_speech(segment, settings)], info

    def _changed(self, settings: TranscriberSettings, names: tuple[str, ...]) -> bool:
        return any(getattr(settings, n) != getattr(self._settings, n) for n in names)

    @classmethod
    def _load_partial(cls, settings: TranscriberSettings) -> WindowedWhisper | None:
        if settings.partial_model in (None, settings.model):
            return None
        return cls._load(settings.partial_model, settings)

    @staticmethod
    def _load(reference: str, settings: TranscriberSettings) -> WindowedWhisper:
        started = time.perf_counter()
        try:
            model = WindowedWhisper(
                resolve_whisper_model(reference),
                device=settings.device,
                compute_type=settings.compute_type,
                cpu_threads=settings.cpu_threads,
                margin_s=settings.window_margin_s,
            )
        except (OSError, RuntimeError, ValueError) as error:
            # Missing folders, unknown hub ids, unsupported compute types.
            raise ModelUnavailable(reference, str(error)) from error
        logger.info(
            "loaded recognizer %s on %s (%s) in %.2f s",
            reference,
            settings.device,
            settings.compute_type,
            time.perf_counter() - started,
        )
        return model


def _decoding_effort(
    settings: TranscriberSettings, partial: bool, duration_s: float
) -> dict[str, Any]:
    window_s = min(duration_s, _WINDOW_S)
    effort: dict[str, Any] = {
        "max_new_tokens": min(
            _MAX_NEW_TOKENS,
            _TOKEN_ALLOWANCE + math.ceil(window_s * settings.max_tokens_per_second),
        )
    }
    if partial:
        # Partials are replaced by the final pass, so they take the cheapest
        # path: greedy, no timestamp tokens, no temperature fallback.
        effort.update(beam_size=1, without_timestamps=True, temperature=0.0)
    else:
        effort.update(beam_size=settings.beam_size)
    return effort


def _prompt_tail(prompt: str | None) -> str | None:
    if not prompt or not prompt.strip():
        return None
    prompt = prompt.strip()
    if len(prompt) <= _PROMPT_TAIL_CHARS:
        return prompt
    tail = prompt[-_PROMPT_TAIL_CHARS:]
    # Start at a word boundary so the decoder is not primed with a fragment.
    return tail.split(" ", 1)[-1]


def _is_speech(segment: Segment, settings: TranscriberSettings) -> bool:
    # Stricter than Whisper's own rule, which keeps the "You" it hears in
    # silence: here a phantom phrase would be translated and spoken aloud.
    if (
        segment.no_speech_prob > settings.no_speech_threshold
        and segment.avg_logprob < settings.silence_log_prob_threshold
    ):
        return False
    # A decode that still loops after any fallback is noise, not speech.
    return segment.compression_ratio <= settings.compression_ratio_threshold
