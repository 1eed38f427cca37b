"""What each benchmark session says: real clips, with a pause after each."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from app.audio_file import read_pcm16

# Long enough for the detector to end the utterance (0.6 s by default).
PAUSE_S = 1.2


@dataclass(frozen=True)
class Clip:
    name: str
    pcm16: bytes
    sample_rate: int
    text: str

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / self.sample_rate


@dataclass(frozen=True)
class ClipSpan:
    """Where one clip lies in a session's audio, in samples."""

    clip: Clip
    start: int
    end: int


@dataclass(frozen=True)
class Program:
    """A session's whole input: the clips in order, each followed by a pause."""

    pcm16: bytes
    sample_rate: int
    spans: list[ClipSpan]

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / self.sample_rate


def load_clips(folder: Path, limit: int | None = None) -> list[Clip]:
    """WAV/FLAC clips of a folder, with texts from `references.tsv` if present."""
    texts: dict[str, str] = {}
    references = folder / "references.tsv"
    if references.exists():
        with references.open(newline="") as handle:
            rows = csv.DictReader(handle, delimiter="\t")
            texts = {row["clip"]: row["text"] for row in rows}

    paths = sorted(p for p in folder.iterdir() if p.suffix in {".wav", ".flac"})
    if not paths:
        raise FileNotFoundError(f"no .wav or .flac clips in {folder}")
    clips = []
    for path in paths[:limit]:
        pcm16, rate = read_pcm16(path)
        clips.append(Clip(path.name, pcm16, rate, texts.get(path.name, "")))
    return clips


def clips_spoken(clips: list[Clip], sessions: int, count: int) -> list[Clip]:
    """The clips that `sessions` programs of `count` clips each speak."""
    used = {
        (offset + index) % len(clips)
        for offset in range(sessions)
        for index in range(count)
    }
    return [clips[index] for index in sorted(used)]


def build_program(clips: list[Clip], count: int, offset: int = 0) -> Program:
    """`count` clips from `offset` on (wrapping), at the first clip's rate."""
    rate = clips[0].sample_rate
    pause = bytes(int(rate * PAUSE_S) * 2)
    parts: list[bytes] = []
    spans: list[ClipSpan] = []
    position = 0
    for index in range(count):
        clip = clips[(offset + index) % len(clips)]
        pcm16 = at_rate(clip.pcm16, clip.sample_rate, rate)
        spans.append(ClipSpan(clip, position, position + len(pcm16) // 2))
        parts += [pcm16, pause]
        position += (len(pcm16) + len(pause)) // 2
    return Program(b"".join(parts), rate, spans)


def at_rate(pcm16: bytes, rate: int, target: int) -> bytes:
    """Whole PCM16 audio at `rate` resampled to `target`."""
    if rate == target:
        return pcm16
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
    resampled = soxr.resample(samples, rate, target)
    return np.clip(resampled * 32768.0, -32768, 32767).astype("<i2").tobytes()
