"""Client audio to the pipeline's format: PCM16 at any rate to PCM16 16 kHz.

The resampler is a polyphase windowed-sinc (Kaiser) FIR whose whole state is
a `ResamplerState`: a few integers plus the input samples the next outputs
still need. That state serialises to a few hundred bytes, so a session's
input stream can move to another process between any two chunks.

Output sample k sits at input position ``k * down / up`` (``up / down`` is
16000 / rate in lowest terms) and is computed from the input samples within
``half`` samples of that position, once they have all arrived. Each output is
the same float64 sum of the same products however the input was chunked, then
rounded half-to-even, so the bytes never depend on chunking or on where the
state was saved and restored.

The filter is zero-phase, so outputs are not shifted in time, but they lag
the input: output k can only be emitted once input sample
``floor(k * down / up) + half`` has arrived. ``half`` is about 65 samples at
48 kHz (1.4 ms) and at most 2.8 ms at any rate. A 16 kHz input passes through
unchanged with no lag.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

import numpy as np

from app.vad import SAMPLE_RATE

MIN_INPUT_RATE = 8_000
MAX_INPUT_RATE = 192_000

# Kaiser design target. The formulas are approximate, so aim above the 60 dB
# the speech models need.
_ATTENUATION_DB = 70.0
# Passband ends and stopband starts at these fractions of the lower Nyquist,
# so the -6 dB cutoff sits at 0.9 of it and nothing above the output Nyquist
# aliases back (or, upsampling, no image lands below it).
_PASSBAND_EDGE = 0.8
_STOPBAND_EDGE = 1.0
# A bank holds `up` rows, up to 16000 for rates sharing little with 16 kHz.
# Past this many taps (16 MiB; odd rates above about 48 kHz, like 96001) the
# taps each block needs are computed as it runs instead, at some CPU cost.
_MAX_BANK_TAPS = 1 << 21
# Outputs computed per block bound the temporary (outputs x taps) arrays.
_BLOCK_TAPS = 1 << 19

_HEADER = struct.Struct("<4sIqqI")
_MAGIC = b"TRS1"


@dataclass(frozen=True)
class _Filter:
    """The polyphase filter for one input rate."""

    up: int
    down: int
    half: int  # taps reach `half` input samples either side of a position
    cutoff: float  # cycles per input sample
    beta: float
    bank: np.ndarray | None  # (up, 2 * half) taps per phase, or None

    @property
    def taps(self) -> int:
        return 2 * self.half


@dataclass
class ResamplerState:
    """Everything a resampler needs to carry on a stream; serialisable.

    Attributes:
        input_rate: Sample rate of the incoming PCM16, in Hz.
        produced: Output samples emitted so far in this stream.
        history_start: Input index of the first sample in `history`; negative
            at the start, where it stands for the zeros before the stream.
        history: Input samples from `history_start` on, PCM16 little-endian.
    """

    input_rate: int
    produced: int = 0
    history_start: int = 0
    history: bytes = b""

    @classmethod
    def start(cls, input_rate: int) -> ResamplerState:
        """Returns the state of a fresh stream at `input_rate` Hz.

        Raises:
            ValueError: If the rate is outside 8000..192000 Hz.
        """
        if not MIN_INPUT_RATE <= input_rate <= MAX_INPUT_RATE:
            raise ValueError(
                f"input rate {input_rate} Hz is outside "
                f"{MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz"
            )
        lead = max(_filter(input_rate).half - 1, 0)
        return cls(input_rate, 0, -lead, bytes(2 * lead))

    @property
    def received(self) -> int:
        """Input samples consumed so far in this stream."""
        return self.history_start + len(self.history) // 2

    def to_bytes(self) -> bytes:
        """Returns a compact encoding that `from_bytes` restores exactly."""
        header = _HEADER.pack(
            _MAGIC,
            self.input_rate,
            self.produced,
            self.history_start,
            len(self.history) // 2,
        )
        return header + self.history

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ResamplerState:
        """Restores a state saved by `to_bytes`.

        There is no state without a rate, so None or empty data is an error;
        callers start a stream with `start` and always store its state.

        Raises:
            ValueError: If `data` is missing, truncated or not such a state.
        """
        if not data or len(data) < _HEADER.size:
            raise ValueError("no resampler state to restore")
        magic, rate, produced, history_start, count = _HEADER.unpack_from(data)
        history = bytes(data[_HEADER.size :])
        if magic != _MAGIC or len(history) != 2 * count:
            raise ValueError("malformed resampler state")
        if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
            raise ValueError(f"resampler state has bad input rate {rate}")
        return cls(rate, produced, history_start, history)


def resample(state: ResamplerState, pcm16: bytes, *, last: bool = False) -> bytes:
    """Consumes PCM16 at `state.input_rate`; mutates `state`; returns 16 kHz PCM16.

    Returns every output sample whose inputs have all arrived. With `last`,
    the stream ends: the input is taken as zero past its end, the remaining
    outputs are returned (``ceil(n * 16000 / rate)`` samples in all for `n`
    input samples), and `state` is reset to start a new stream.

    Raises:
        ValueError: If `pcm16` holds an odd number of bytes.
    """
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 chunk has an odd length of {len(pcm16)} bytes")
    filt = _filter(state.input_rate)
    if filt.up == filt.down:
        return _pass_through(state, pcm16, last=last)

    buffer = np.frombuffer(state.history + pcm16, dtype="<i2")
    end = state.history_start + len(buffer)
    if last:
        # Zeros past the end let the final outputs be computed like the rest.
        buffer = np.concatenate([buffer, np.zeros(filt.half, dtype="<i2")])
        stop = -(-end * filt.up // filt.down)
    else:
        stop = -(-(end - filt.half) * filt.up // filt.down)
    stop = max(stop, state.produced)

    out = _compute(filt, buffer, state.history_start, state.produced, stop)
    if last:
        _reset(state, ResamplerState.start(state.input_rate))
        return out

    next_start = (stop * filt.down) // filt.up - filt.half + 1
    keep = buffer[next_start - state.history_start :]
    _reset(state, ResamplerState(state.input_rate, stop, next_start, keep.tobytes()))
    return out


def pcm16_to_float(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0


def _pass_through(state: ResamplerState, pcm16: bytes, *, last: bool) -> bytes:
    """16 kHz in, 16 kHz out: only the counters move."""
    if last:
        _reset(state, ResamplerState.start(state.input_rate))
    else:
        state.produced += len(pcm16) // 2
        state.history_start += len(pcm16) // 2
    return pcm16


def _reset(state: ResamplerState, new: ResamplerState) -> None:
    state.produced = new.produced
    state.history_start = new.history_start
    state.history = new.history


def _compute(
    filt: _Filter, buffer: np.ndarray, buffer_start: int, first: int, stop: int
) -> bytes:
    """Returns outputs `first` to `stop` from `buffer`, which starts at input
    index `buffer_start` and holds every sample they need."""
    if stop <= first:
        return b""
    samples = buffer.astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(samples, filt.taps)
    block = max(1, _BLOCK_TAPS // filt.taps)
    parts = []
    for begin in range(first, stop, block):
        k = np.arange(begin, min(begin + block, stop), dtype=np.int64)
        position = k * filt.down
        rows = position // filt.up - filt.half + 1 - buffer_start
        phases = position % filt.up
        taps = filt.bank[phases] if filt.bank is not None else _taps(filt, phases)
        # An elementwise product summed along its contiguous last axis: each
        # row's sum depends only on that row, never on the block around it.
        values = (windows[rows] * taps).sum(axis=1)
        parts.append(np.clip(np.rint(values), -32768, 32767).astype("<i2"))
    return np.concatenate(parts).tobytes()


@functools.lru_cache(maxsize=8)
def _filter(input_rate: int) -> _Filter:
    """Designs the filter for one input rate; cached, as it never changes."""
    common = math.gcd(SAMPLE_RATE, input_rate)
    up, down = SAMPLE_RATE // common, input_rate // common
    if up == down:
        return _Filter(1, 1, 0, 0.5, 0.0, None)

    # Frequencies in cycles per input sample.
    nyquist = min(input_rate, SAMPLE_RATE) / 2 / input_rate
    transition = (_STOPBAND_EDGE - _PASSBAND_EDGE) * nyquist
    cutoff = (_STOPBAND_EDGE + _PASSBAND_EDGE) / 2 * nyquist
    # Kaiser's estimates of length and shape for the attenuation wanted.
    length = (_ATTENUATION_DB - 7.95) / (2.285 * 2 * math.pi * transition)
    beta = 0.1102 * (_ATTENUATION_DB - 8.7)
    half = math.ceil(length / 2)

    filt = _Filter(up, down, half, cutoff, beta, None)
    if up * filt.taps > _MAX_BANK_TAPS:
        return filt
    bank = _taps(filt, np.arange(up, dtype=np.int64))
    bank.flags.writeable = False
    return _Filter(up, down, half, cutoff, beta, bank)


def _taps(filt: _Filter, phases: np.ndarray) -> np.ndarray:
    """Returns the taps for each phase, one row each, for inputs
    ``i - half + 1 .. i + half`` around position ``i + phase / up``."""
    offsets = np.arange(1 - filt.half, filt.half + 1, dtype=np.float64)
    distance = (phases / filt.up)[:, None] - offsets
    inside = np.clip(1.0 - (distance / filt.half) ** 2, 0.0, None)
    window = np.i0(filt.beta * np.sqrt(inside)) / np.i0(filt.beta)
    taps: np.ndarray = 2 * filt.cutoff * np.sinc(2 * filt.cutoff * distance) * window
    # Unit gain at DC for every phase, so a DC offset comes out without ripple.
    taps /= taps.sum(axis=1, keepdims=True)
    return taps
