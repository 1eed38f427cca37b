"""Cuts a session's 16 kHz audio into utterances, frame by frame.

Pure logic over speech probabilities: the caller runs the detector and keeps
the buffer of the utterance in progress; this module decides what happens to
the buffer and keeps its small state serialisable, so that a session can move
between replicas mid-utterance.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import asdict, dataclass, field

import numpy as np

from app.vad import FRAME_SAMPLES, SAMPLE_RATE, DetectorState, SpeechDetector

FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE
# Probabilities between the two thresholds keep the previous decision, so a
# soft syllable does not end an utterance.
_HYSTERESIS = 0.15
_PREROLL_FRAMES = 10
_TRAILING_PAD_FRAMES = 6


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5
    min_silence_frames: int = 19
    min_speech_frames: int = 8
    max_utterance_frames: int = 625
    partial_frames: int = 31
    # Silence after which the utterance is announced as likely ended, so its
    # final transcript can start before the end is certain; 0: never.
    likely_end_frames: int = 0

    @classmethod
    def from_seconds(
        cls,
        *,
        threshold: float,
        min_silence_s: float,
        min_speech_s: float,
        max_utterance_s: float,
        partial_interval_s: float,
        likely_end_s: float = 0.0,
    ) -> SegmenterConfig:
        def frames(seconds: float) -> int:
            return max(1, round(seconds * 1000 / FRAME_MS))

        return cls(
            threshold=threshold,
            min_silence_frames=frames(min_silence_s),
            min_speech_frames=frames(min_speech_s),
            max_utterance_frames=frames(max_utterance_s),
            partial_frames=frames(partial_interval_s),
            likely_end_frames=frames(likely_end_s) if likely_end_s > 0 else 0,
        )


@dataclass
class SegmenterState:
    """Everything but the audio buffer; round-trips through `to_bytes`."""

    position: int = 0
    in_speech: bool = False
    utterance_start: int = 0
    utterance_frames: int = 0
    speech_frames: int = 0
    silence_frames: int = 0
    frames_since_partial: int = 0
    carry: bytes = b""
    detector: DetectorState = field(default_factory=DetectorState.initial)

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        fields["carry"] = base64.b64encode(self.carry).decode()
        fields["detector"] = base64.b64encode(self.detector.to_bytes()).decode()
        return json.dumps(fields).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> SegmenterState:
        if not data:
            return cls()
        fields = json.loads(data)
        fields["carry"] = base64.b64decode(fields["carry"])
        fields["detector"] = DetectorState.from_bytes(
            base64.b64decode(fields["detector"])
        )
        return cls(**fields)


@dataclass(frozen=True)
class EndedUtterance:
    """An utterance's audio (PCM16 16 kHz) and where it lies in the stream."""

    pcm: bytes
    start_ms: int
    end_ms: int

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", self.start_ms, self.end_ms) + self.pcm

    @classmethod
    def from_bytes(cls, data: bytes) -> EndedUtterance:
        start_ms, end_ms = struct.unpack_from("<QQ", data)
        return cls(pcm=data[16:], start_ms=start_ms, end_ms=end_ms)


@dataclass
class Segmentation:
    """What one chunk did to the buffer, for the store to repeat in Redis.

    `likely_end` is the utterance in progress exactly as it will end if the
    silence it has reached goes on: the same audio and times.
    """

    append: bytearray = field(default_factory=bytearray)
    replace: bytes | None = None
    ended: list[EndedUtterance] = field(default_factory=list)
    partial_due: bool = False
    likely_end: EndedUtterance | None = None


class Segmenter:
    """Applies frames to a session's buffer and state; holds no session data."""

    def __init__(self, config: SegmenterConfig, detector: SpeechDetector) -> None:
        self._config = config
        self._detector = detector

    def feed(
        self, state: SegmenterState, buffer: bytearray, pcm: bytes
    ) -> Segmentation:
        """Consumes PCM16 16 kHz audio; whole frames only, the rest is carried."""
        data = state.carry + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        state.carry = data[whole:]
        result = Segmentation()
        if whole == 0:
            return result

        samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32)
        frames = (samples / 32768.0).reshape(-1, FRAME_SAMPLES)
        probabilities = self._detector.probabilities(frames, state.detector)
        for index, probability in enumerate(probabilities):
            frame = data[index * FRAME_BYTES : (index + 1) * FRAME_BYTES]
            self._step(state, buffer, frame, float(probability), result)
        return result

    def flush(self, state: SegmenterState, buffer: bytearray) -> Segmentation:
        """Ends the utterance in progress, if it holds enough speech."""
        result = Segmentation()
        state.carry = b""
        if state.in_speech:
            self._end(state, buffer, result)
        return result

    def _step(
        self,
        state: SegmenterState,
        buffer: bytearray,
        frame: bytes,
        probability: float,
        result: Segmentation,
    ) -> None:
        config = self._config
        state.position += 1
        speech = probability >= config.threshold
        silence = probability < config.threshold - _HYSTERESIS

        if not state.in_speech:
            if not speech:
                self._keep_preroll(buffer, frame, result)
                return
            state.in_speech = True
            state.utterance_start = state.position - 1 - len(buffer) // FRAME_BYTES
            state.utterance_frames = len(buffer) // FRAME_BYTES
            state.speech_frames = 0
            state.silence_frames = 0
            state.frames_since_partial = 0

        buffer.extend(frame)
        result.append.extend(frame)
        state.utterance_frames += 1
        state.frames_since_partial += 1
        if silence:
            state.silence_frames += 1
        else:
            state.speech_frames += 1
            state.silence_frames = 0
            # Speech again later in the same chunk: that end is no longer likely.
            result.likely_end = None

        if state.frames_since_partial >= config.partial_frames:
            state.frames_since_partial = 0
            result.partial_due = state.speech_frames >= config.min_speech_frames
        if (
            state.silence_frames >= config.min_silence_frames
            or state.utterance_frames >= config.max_utterance_frames
        ):
            self._end(state, buffer, result)
        elif (
            config.likely_end_frames
            and state.silence_frames
            == max(config.likely_end_frames, _TRAILING_PAD_FRAMES)
            and state.speech_frames >= config.min_speech_frames
        ):
            # Only the silence grows from here on, and the pad after the
            # speech is complete: the cut is the one `_end` will make.
            result.likely_end = self._cut(state, buffer)

    def _cut(self, state: SegmenterState, buffer: bytearray) -> EndedUtterance:
        """The utterance in the buffer: its speech and a short pad of silence."""
        trailing = max(0, state.silence_frames - _TRAILING_PAD_FRAMES)
        kept = len(buffer) - trailing * FRAME_BYTES
        return EndedUtterance(
            pcm=bytes(buffer[:kept]),
            start_ms=state.utterance_start * FRAME_MS,
            end_ms=(state.utterance_start + kept // FRAME_BYTES) * FRAME_MS,
        )

    def _end(
        self, state: SegmenterState, buffer: bytearray, result: Segmentation
    ) -> None:
        if state.speech_frames >= self._config.min_speech_frames:
            result.ended.append(self._cut(state, buffer))
            result.likely_end = None
            del buffer[:]
        else:
            del buffer[: max(0, len(buffer) - _PREROLL_FRAMES * FRAME_BYTES)]

        state.in_speech = False
        state.speech_frames = 0
        state.silence_frames = 0
        state.utterance_frames = 0
        result.append.clear()
        result.replace = bytes(buffer)

    @staticmethod
    def _keep_preroll(buffer: bytearray, frame: bytes, result: Segmentation) -> None:
        buffer.extend(frame)
        excess = len(buffer) - _PREROLL_FRAMES * FRAME_BYTES
        if excess > 0:
            del buffer[:excess]
        # Once the buffer was rewritten in this chunk, the new content is simply
        # the current buffer: no append can express a trimmed front.
        result.replace = bytes(buffer)
        result.append.clear()
