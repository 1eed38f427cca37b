"""onnxruntime sessions for the neural voices, with bounded threads."""

from __future__ import annotations

import onnxruntime
from onnxruntime.capi import onnxruntime_pybind11_state as _state

from deployments.errors import BackendUnavailable

# onnxruntime's own errors derive from Exception directly, not RuntimeError.
ONNX_ERRORS: tuple[type[Exception], ...] = (
    _state.EPFail,
    _state.EngineError,
    _state.Fail,
    _state.InvalidArgument,
    _state.InvalidGraph,
    _state.InvalidProtobuf,
    _state.ModelLoaded,
    _state.NoModel,
    _state.NoSuchFile,
    _state.NotImplemented,
    _state.RuntimeException,
)


def open_session(
    backend: str, model_path: str, cpu_threads: int
) -> onnxruntime.InferenceSession:
    """A CPU session using at most `cpu_threads` threads per call (0: all).

    Raises:
        BackendUnavailable: the model is missing or cannot be loaded.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads
    try:
        return onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except ONNX_ERRORS as error:
        raise BackendUnavailable(backend, str(error)) from error
