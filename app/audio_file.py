"""Reading sound files to stream, and writing received speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr


def read_pcm16(path: Path) -> tuple[bytes, int]:
    """Any file libsndfile reads (wav, flac, ogg, mp3), as mono PCM16 and its rate."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return _to_pcm16(mono), int(rate)


def write_wav(path: Path, chunks: list[tuple[int, bytes]]) -> float:
    """Writes PCM16 chunks, each at its own rate, as one WAV; returns seconds."""
    if not chunks:
        raise ValueError("no audio to write")
    rate = chunks[0][0]
    parts = []
    for chunk_rate, pcm in chunks:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if chunk_rate != rate:
            samples = soxr.resample(samples, chunk_rate, rate)
        parts.append(samples)
    audio = np.concatenate(parts)
    soundfile.write(str(path), audio, rate, subtype="PCM_16")
    return len(audio) / rate


def _to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
