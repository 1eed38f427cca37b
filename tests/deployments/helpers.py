"""Speech helpers shared by the stage tests."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import soundfile
import soxr

from deployments.recognition import SpeechRecognizer
from deployments.schema import ASR_SAMPLE_RATE, TranscriptionRequest


def load_clip(audio_dir: Path, clip: str) -> np.ndarray:
    """A clip as 16 kHz mono float32, as the ingress sends it."""
    samples, rate = soundfile.read(audio_dir / clip, dtype="float32")
    return soxr.resample(samples, rate, ASR_SAMPLE_RATE).astype(np.float32)


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())


def read_back(
    recognizer: SpeechRecognizer, audio: np.ndarray, rate: int, language: str
) -> str:
    """What the recognizer hears in synthesized audio (float or int16)."""
    samples = np.asarray(audio)
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32767
    samples = soxr.resample(samples, rate, ASR_SAMPLE_RATE).astype(np.float32)
    request = TranscriptionRequest(audio=samples, language=language)
    return recognizer.transcribe(request).text


def word_recall(reference: str, heard: str) -> float:
    """Share of the reference's words that were heard, each counted once."""
    remaining = words(heard)
    found = 0
    for word in words(reference):
        if word in remaining:
            remaining.remove(word)
            found += 1
    return found / len(words(reference))
