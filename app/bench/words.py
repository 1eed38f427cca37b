"""When each word of a clip is spoken: the yardstick of partial-transcript delay.

Timed once per clip by the same recognizer the service uses, locally, with
word timestamps, and cached beside the report.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.bench.program import Clip


@dataclass(frozen=True)
class TimedWord:
    word: str
    end_s: float


def normalized_words(text: str) -> list[str]:
    """Lower-case words without punctuation or accents, for matching."""
    plain = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return re.findall(r"[a-z0-9']+", plain)


def time_words(clips: list[Clip], cache: Path) -> dict[str, list[TimedWord]]:
    """Word end times of each clip, from `cache` when it has them."""
    known: dict[str, list[TimedWord]] = {}
    if cache.exists():
        stored = json.loads(cache.read_text())
        known = {
            name: [TimedWord(**w) for w in words] for name, words in stored.items()
        }
    missing = [clip for clip in clips if clip.name not in known]
    if missing:
        known.update(_recognize(missing))
        cache.parent.mkdir(parents=True, exist_ok=True)
        serialised = {name: [asdict(w) for w in words] for name, words in known.items()}
        cache.write_text(json.dumps(serialised))
    return known


def _recognize(clips: list[Clip]) -> dict[str, list[TimedWord]]:
    import soxr
    from faster_whisper import WhisperModel

    from deployments.models import resolve_whisper_model
    from deployments.recognition import TranscriberSettings

    settings = TranscriberSettings()
    model = WhisperModel(
        resolve_whisper_model(settings.model),
        device="cpu",
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
    )
    timed: dict[str, list[TimedWord]] = {}
    for clip in clips:
        samples = np.frombuffer(clip.pcm16, dtype="<i2").astype(np.float32) / 32768.0
        audio = soxr.resample(samples, clip.sample_rate, 16_000)
        segments, _ = model.transcribe(audio, language="en", word_timestamps=True)
        timed[clip.name] = [
            TimedWord(word, float(w.end))
            for segment in segments
            for w in segment.words or []
            for word in normalized_words(w.word)
        ]
    return timed
