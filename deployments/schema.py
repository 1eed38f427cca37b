"""Values that travel between the ingress and the model stages.

Audio crosses Ray as numpy arrays (float32 in [-1, 1], mono); everything else is
plain data so that the stages never import ingress code and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ASR_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class TranscriptionRequest:
    """One utterance (or the part heard so far) to recognise.

    `partial` asks for a quick, greedy pass used for live partial transcripts;
    a final pass may spend more effort. `prompt` is recent text of the same
    session that helps the recognizer with names and style.
    """

    audio: np.ndarray
    language: str | None = None
    prompt: str | None = None
    partial: bool = False


@dataclass(frozen=True)
class ReplicaUsage:
    """CPU seconds a stage replica's process has used since it started."""

    replica: str
    cpu_s: float


@dataclass(frozen=True)
class TranscriptSegment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    segments: list[TranscriptSegment] = field(default_factory=list)
    compute_s: float = 0.0
    model: str = ""
    usage: ReplicaUsage | None = None


@dataclass(frozen=True)
class Translation:
    text: str
    source: str
    target: str
    backend: str
    compute_s: float = 0.0
    usage: ReplicaUsage | None = None


@dataclass(frozen=True)
class Speech:
    """Synthesised speech: mono PCM16 little-endian bytes at `sample_rate`."""

    pcm16: bytes
    sample_rate: int
    language: str
    backend: str
    voice: str
    compute_s: float = 0.0
    usage: ReplicaUsage | None = None

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / self.sample_rate
