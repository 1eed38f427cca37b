"""The streaming resampler: exact under any chunking and any handover, and good."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from app.resampling import ResamplerState, resample

RATES = [8_000, 11_025, 22_050, 44_100, 48_000]


def noise(rate: int, seconds: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    samples = rng.normal(0, 8000, int(rate * seconds))
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def tone(rate: int, frequency: float, seconds: float, amplitude: float) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (
        np.rint(amplitude * np.sin(2 * np.pi * frequency * t)).astype("<i2").tobytes()
    )


def random_chunks(pcm16: bytes, seed: int) -> list[bytes]:
    """Splits PCM16 into chunks of 1 to 3000 samples, many of them tiny."""
    rng = np.random.default_rng(seed)
    chunks, at = [], 0
    while at < len(pcm16):
        size = int(rng.choice([1, 2, 3, rng.integers(1, 3000)]))
        chunks.append(pcm16[at : at + 2 * size])
        at += 2 * size
    return chunks


def one_shot(rate: int, pcm16: bytes) -> bytes:
    return resample(ResamplerState.start(rate), pcm16, last=True)


def as_samples(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


@pytest.mark.parametrize("rate", [*RATES, 96_001])
def test_chunking_does_not_change_the_output(rate: int) -> None:
    pcm16 = noise(rate, 0.4, seed=rate)
    expected = one_shot(rate, pcm16)

    for seed in range(3):
        state = ResamplerState.start(rate)
        out = [resample(state, chunk) for chunk in random_chunks(pcm16, seed)]
        out.append(resample(state, b"", last=True))
        assert b"".join(out) == expected


@pytest.mark.parametrize("rate", RATES)
def test_last_chunk_can_carry_samples(rate: int) -> None:
    pcm16 = noise(rate, 0.1)
    state = ResamplerState.start(rate)
    head = resample(state, pcm16[:1000])
    assert head + resample(state, pcm16[1000:], last=True) == one_shot(rate, pcm16)


@pytest.mark.parametrize("rate", [*RATES, 16_000, 192_000])
def test_state_survives_serialising_at_every_boundary(rate: int) -> None:
    pcm16 = noise(rate, 0.3, seed=1)
    state = ResamplerState.start(rate)
    out = []
    for chunk in random_chunks(pcm16, seed=rate):
        out.append(resample(state, chunk))
        restored = ResamplerState.from_bytes(state.to_bytes())
        assert restored == state
        state = restored
    out.append(resample(state, b"", last=True))
    assert b"".join(out) == one_shot(rate, pcm16)


def test_state_is_small() -> None:
    state = ResamplerState.start(192_000)
    resample(state, noise(192_000, 0.05))
    assert len(state.to_bytes()) < 2048


@pytest.mark.parametrize("data", [None, b"", b"TRS1", b"XXXX" + bytes(24)])
def test_missing_or_malformed_state_is_refused(data: bytes | None) -> None:
    with pytest.raises(ValueError):
        ResamplerState.from_bytes(data)


def test_truncated_history_is_refused() -> None:
    state = ResamplerState.start(48_000)
    resample(state, noise(48_000, 0.01))
    with pytest.raises(ValueError):
        ResamplerState.from_bytes(state.to_bytes()[:-2])


@pytest.mark.parametrize("rate", [7_999, 192_001, 0])
def test_rate_outside_range_is_refused(rate: int) -> None:
    with pytest.raises(ValueError):
        ResamplerState.start(rate)


def test_odd_byte_count_is_refused() -> None:
    with pytest.raises(ValueError):
        resample(ResamplerState.start(48_000), b"\x00\x01\x02")


def test_sixteen_khz_passes_through_without_delay() -> None:
    pcm16 = noise(16_000, 0.2)
    state = ResamplerState.start(16_000)
    for chunk in random_chunks(pcm16, seed=0):
        assert resample(state, chunk) == chunk
    assert resample(state, b"", last=True) == b""


@pytest.mark.parametrize("rate", [*RATES, 12_000, 96_000, 192_000, 44_101])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 441, 4999])
def test_flush_emits_every_output_position_inside_the_input(
    rate: int, count: int
) -> None:
    pcm16 = noise(rate, 1.0)[: 2 * count]
    split = 2 * (count // 2)
    state = ResamplerState.start(rate)
    out = resample(state, pcm16[:split]) + resample(state, pcm16[split:], last=True)
    assert len(out) // 2 == math.ceil(count * 16_000 / rate)
    assert state == ResamplerState.start(rate)


@pytest.mark.parametrize("rate", [*RATES, 192_000])
def test_outputs_lag_the_input_by_under_three_milliseconds(rate: int) -> None:
    state = ResamplerState.start(rate)
    out = resample(state, noise(rate, 0.5))
    assert len(out) // 2 >= 8000 - 48


def snr_db(rate: int, frequency: float) -> float:
    amplitude = 16000.0
    out = as_samples(one_shot(rate, tone(rate, frequency, 1.0, amplitude)))
    ideal = amplitude * np.sin(2 * np.pi * frequency * np.arange(len(out)) / 16_000)
    # The zeros around the stream make the ends ring; judge the middle.
    signal, error = ideal[200:-200], (out - ideal)[200:-200]
    return 10 * math.log10(np.sum(signal**2) / np.sum(error**2))


@pytest.mark.parametrize("rate", [44_100, 22_050])
@pytest.mark.parametrize("frequency", [1000.0, 3000.0])
def test_speech_band_tones_come_through_clean(rate: int, frequency: float) -> None:
    assert snr_db(rate, frequency) > 40


def test_tone_above_the_output_nyquist_is_removed() -> None:
    amplitude = 16000.0
    out = as_samples(one_shot(48_000, tone(48_000, 10_000.0, 1.0, amplitude)))
    rms = np.sqrt(np.mean(out[200:-200] ** 2))
    attenuation_db = 20 * math.log10(rms / (amplitude / math.sqrt(2)))
    assert attenuation_db < -50


def test_a_minute_at_48_khz_in_20_ms_chunks_is_fast() -> None:
    pcm16 = noise(48_000, 60.0)
    step = 2 * 960
    state = ResamplerState.start(48_000)
    started = time.perf_counter()
    out = [resample(state, pcm16[at : at + step]) for at in range(0, len(pcm16), step)]
    out.append(resample(state, b"", last=True))
    elapsed = time.perf_counter() - started
    assert sum(len(part) for part in out) == 2 * 16_000 * 60
    assert elapsed < 3.0
