"""Sample format conversions shared by the stages."""

from __future__ import annotations

import numpy as np
import soxr

from deployments.errors import InvalidAudio

_INT16_SCALE = 32767


def mono_float32(audio: np.ndarray) -> np.ndarray:
    """Return `audio` as a contiguous 1-D float32 array.

    Raises:
        InvalidAudio: the array is not one channel of float or int16 samples.
    """
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise InvalidAudio(f"expected one channel, got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / _INT16_SCALE
    if samples.dtype.kind != "f":
        raise InvalidAudio(f"expected float or int16 samples, got {samples.dtype}")
    return np.ascontiguousarray(samples, dtype=np.float32)


def pcm16_bytes(audio: np.ndarray) -> bytes:
    """Encode float [-1, 1] or int16 samples as little-endian PCM16 bytes."""
    samples = np.asarray(audio)
    if samples.dtype != np.int16:
        scaled = np.clip(samples.astype(np.float32), -1.0, 1.0) * _INT16_SCALE
        samples = np.round(scaled).astype(np.int16)
    return samples.astype("<i2", copy=False).tobytes()


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample mono float32 audio from `rate` to `target_rate` Hz."""
    if rate == target_rate:
        return audio
    return soxr.resample(audio, rate, target_rate).astype(np.float32, copy=False)
