"""Speech probability per 32 ms frame, from the Silero VAD model (ONNX).

The model is recurrent: its state and the last samples of the previous frame
travel with the session (see `DetectorState.to_bytes`), so any replica can go
on listening where another one stopped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 512
_CONTEXT_SAMPLES = 64
_STATE_SHAPE = (2, 1, 128)
_STATE_BYTES = 2 * 128 * 4


def default_model_path() -> Path:
    """The ONNX file that the silero-vad package ships (found without torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed")
    return Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"


@dataclass
class DetectorState:
    recurrent: np.ndarray
    context: np.ndarray

    @classmethod
    def initial(cls) -> DetectorState:
        return cls(
            recurrent=np.zeros(_STATE_SHAPE, dtype=np.float32),
            context=np.zeros((1, _CONTEXT_SAMPLES), dtype=np.float32),
        )

    def to_bytes(self) -> bytes:
        return self.recurrent.tobytes() + self.context.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DetectorState:
        recurrent = np.frombuffer(data[:_STATE_BYTES], dtype=np.float32)
        context = np.frombuffer(data[_STATE_BYTES:], dtype=np.float32)
        return cls(
            recurrent=recurrent.reshape(_STATE_SHAPE).copy(),
            context=context.reshape(1, _CONTEXT_SAMPLES).copy(),
        )


class SpeechDetector:
    """Stateless wrapper of the model; callers hold the `DetectorState`."""

    def __init__(self, model_path: Path | None = None) -> None:
        options = onnxruntime.SessionOptions()
        # One thread: frames are tiny and many sessions share the replica.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(model_path or default_model_path()),
            providers=["CPUExecutionProvider"],
            sess_options=options,
        )
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def probabilities(self, frames: np.ndarray, state: DetectorState) -> np.ndarray:
        """Speech probability of each 512-sample row of `frames`; updates `state`."""
        probabilities = np.empty(len(frames), dtype=np.float32)
        for index, frame in enumerate(frames):
            window = np.concatenate([state.context, frame[np.newaxis, :]], axis=1)
            output, state.recurrent = self._session.run(
                None, {"input": window, "state": state.recurrent, "sr": self._rate}
            )
            state.context = window[:, -_CONTEXT_SAMPLES:]
            probabilities[index] = output[0, 0]
        return probabilities
