"""The segmenter's decisions, driven by scripted speech probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from app.segmenter import (
    FRAME_BYTES,
    FRAME_MS,
    EndedUtterance,
    Segmenter,
    SegmenterConfig,
    SegmenterState,
)
from app.settings import IngressSettings
from app.vad import DetectorState


class ScriptedDetector:
    """Says "speech" for frames whose first sample is non-zero."""

    def probabilities(self, frames: np.ndarray, state: DetectorState) -> np.ndarray:
        return np.where(frames[:, 0] != 0, 0.9, 0.05).astype(np.float32)


def frames(pattern: str) -> bytes:
    """'s' = a speech frame, '.' = a silent frame."""
    speech = (np.full(512, 1000, dtype="<i2")).tobytes()
    silence = bytes(FRAME_BYTES)
    return b"".join(speech if c == "s" else silence for c in pattern)


CONFIG = SegmenterConfig(
    threshold=0.5,
    min_silence_frames=5,
    min_speech_frames=3,
    max_utterance_frames=40,
    partial_frames=10,
)


@pytest.fixture
def segmenter() -> Segmenter:
    return Segmenter(CONFIG, ScriptedDetector())  # type: ignore[arg-type]


def test_segmenter_ends_utterance_after_silence(segmenter: Segmenter) -> None:
    state, buffer = SegmenterState(), bytearray()

    result = segmenter.feed(state, buffer, frames("...." + "s" * 8 + "." * 5))

    assert len(result.ended) == 1
    utterance = result.ended[0]
    # The four silent frames before speech are kept as pre-roll.
    assert utterance.start_ms == 0
    assert len(utterance.pcm) == (4 + 8 + 5) * FRAME_BYTES
    assert not state.in_speech
    assert buffer == bytearray()


def test_segmenter_drops_short_bursts(segmenter: Segmenter) -> None:
    state, buffer = SegmenterState(), bytearray()

    result = segmenter.feed(state, buffer, frames("ss" + "." * 6))

    assert result.ended == []
    assert not state.in_speech


def test_segmenter_carries_partial_frames_between_chunks(
    segmenter: Segmenter,
) -> None:
    state, buffer = SegmenterState(), bytearray()
    audio = frames("." * 3 + "s" * 10 + "." * 6)

    ended = []
    for offset in range(0, len(audio), 333):
        ended += segmenter.feed(state, buffer, audio[offset : offset + 333]).ended

    assert len(ended) == 1
    assert state.position == 19


def test_segmenter_cuts_long_utterances(segmenter: Segmenter) -> None:
    state, buffer = SegmenterState(), bytearray()

    result = segmenter.feed(state, buffer, frames("s" * 90))

    assert len(result.ended) == 2
    assert all(len(u.pcm) == 40 * FRAME_BYTES for u in result.ended)
    assert state.in_speech


def test_segmenter_asks_for_partials_while_speaking(segmenter: Segmenter) -> None:
    state, buffer = SegmenterState(), bytearray()

    first = segmenter.feed(state, buffer, frames("s" * 9))
    second = segmenter.feed(state, buffer, frames("s" * 2))

    assert not first.partial_due
    assert second.partial_due


def test_segmenter_flush_ends_speech_in_progress(segmenter: Segmenter) -> None:
    state, buffer = SegmenterState(), bytearray()
    segmenter.feed(state, buffer, frames("s" * 6))

    result = segmenter.flush(state, buffer)

    assert len(result.ended) == 1
    assert result.replace == b""


EARLY = SegmenterConfig(
    threshold=0.5,
    min_silence_frames=12,
    min_speech_frames=3,
    max_utterance_frames=400,
    partial_frames=100,
    likely_end_frames=8,
)


def test_likely_end_is_the_utterance_that_ends() -> None:
    """Announced once, at its silence, with the audio and times of the end."""
    segmenter = Segmenter(EARLY, ScriptedDetector())  # type: ignore[arg-type]
    state, buffer = SegmenterState(), bytearray()
    announced = []
    ended = []

    for pattern in ["..", "s" * 10, "." * 7, ".", ".", "..", "..", "."]:
        result = segmenter.feed(state, buffer, frames(pattern))
        if result.likely_end is not None:
            announced.append(result.likely_end)
        ended += result.ended

    assert len(announced) == 1
    assert ended == announced


def test_likely_end_is_announced_again_when_speech_resumes() -> None:
    segmenter = Segmenter(EARLY, ScriptedDetector())  # type: ignore[arg-type]
    state, buffer = SegmenterState(), bytearray()

    first = segmenter.feed(state, buffer, frames("s" * 5 + "." * 9))
    second = segmenter.feed(state, buffer, frames("s" * 5 + "." * 9))
    third = segmenter.feed(state, buffer, frames("." * 3))

    assert first.likely_end is not None and second.likely_end is not None
    assert not first.ended and not second.ended
    assert third.ended == [second.likely_end]
    assert len(second.likely_end.pcm) > len(first.likely_end.pcm)


def test_likely_end_is_withdrawn_when_speech_resumes_in_the_same_chunk() -> None:
    segmenter = Segmenter(EARLY, ScriptedDetector())  # type: ignore[arg-type]
    state, buffer = SegmenterState(), bytearray()

    result = segmenter.feed(state, buffer, frames("s" * 5 + "." * 9 + "ss"))

    assert result.likely_end is None
    assert not result.ended


def test_settings_refuse_a_likely_end_after_the_end() -> None:
    assert IngressSettings(likely_end_s=0).segmenter().likely_end_frames == 0
    with pytest.raises(ValueError, match="likely_end_s"):
        IngressSettings(likely_end_s=0.6, min_silence_s=0.6)


def test_likely_end_waits_for_the_pad_after_speech() -> None:
    """Before the pad of silence is complete, the cut would not be final."""
    config = SegmenterConfig(
        min_silence_frames=12, min_speech_frames=3, likely_end_frames=2
    )
    segmenter = Segmenter(config, ScriptedDetector())  # type: ignore[arg-type]
    state, buffer = SegmenterState(), bytearray()

    early = segmenter.feed(state, buffer, frames("s" * 5 + "." * 5))
    announced = segmenter.feed(state, buffer, frames("."))
    ended = segmenter.feed(state, buffer, frames("." * 6))

    assert early.likely_end is None
    assert ended.ended == [announced.likely_end]


def test_no_likely_end_by_default(segmenter: Segmenter) -> None:
    state, buffer = SegmenterState(), bytearray()

    result = segmenter.feed(state, buffer, frames("s" * 5 + "." * 4))

    assert result.likely_end is None


def test_segmentation_replays_to_the_same_buffer(segmenter: Segmenter) -> None:
    """Applying each chunk's replace/append to a copy gives the live buffer."""
    state, buffer, mirror = SegmenterState(), bytearray(), bytearray()
    audio = frames("." * 15 + "s" * 12 + "." * 7 + "s" * 4)

    for offset in range(0, len(audio), 1500):
        result = segmenter.feed(state, buffer, audio[offset : offset + 1500])
        if result.replace is not None:
            mirror = bytearray(result.replace)
        mirror += result.append
        assert mirror == buffer


def test_segmenter_state_round_trips() -> None:
    state = SegmenterState(position=7, in_speech=True, carry=b"\x01\x02")
    state.detector.recurrent[:] = 0.25

    restored = SegmenterState.from_bytes(state.to_bytes())

    assert restored.position == 7 and restored.in_speech
    assert restored.carry == b"\x01\x02"
    assert np.allclose(restored.detector.recurrent, 0.25)


def test_ended_utterance_round_trips() -> None:
    utterance = EndedUtterance(pcm=b"\x00\x01" * 10, start_ms=FRAME_MS, end_ms=999)

    assert EndedUtterance.from_bytes(utterance.to_bytes()) == utterance
