"""Client audio to the pipeline's format: PCM16 at any rate to PCM16 16 kHz."""

from __future__ import annotations

import numpy as np
import soxr

from app.vad import SAMPLE_RATE


class InputResampler:
    """Streaming resampler for one connection; keeps filter state between chunks.

    The filter state is not session state: after a reconnect a new resampler
    starts, which costs at most a few samples of ringing at the seam.
    """

    def __init__(self, input_rate: int) -> None:
        self.input_rate = input_rate
        self._stream = (
            None
            if input_rate == SAMPLE_RATE
            else soxr.ResampleStream(input_rate, SAMPLE_RATE, 1, dtype="float32")
        )

    def convert(self, pcm16: bytes, *, last: bool = False) -> bytes:
        """Returns PCM16 16 kHz for the PCM16 given; `last` drains the filter."""
        if self._stream is None:
            return pcm16
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        resampled = self._stream.resample_chunk(samples, last=last)
        clipped = np.clip(resampled * 32768.0, -32768, 32767)
        return clipped.astype("<i2").tobytes()


def pcm16_to_float(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
