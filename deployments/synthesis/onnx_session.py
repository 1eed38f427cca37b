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
    backend: str, model_path: str, cpu_threads: int, device: str = "cpu"
) -> onnxruntime.InferenceSession:
    """A session on `device`, using at most `cpu_threads` CPU threads (0: all).

    Raises:
        BackendUnavailable: the model is missing or cannot be loaded, or CUDA
            was asked for and this onnxruntime has no CUDA provider (install
            the `gpu` extra, onnxruntime-gpu).
    """
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise BackendUnavailable(
                backend, "device cuda needs onnxruntime-gpu (the 'gpu' extra)"
            )
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads
    # Idle threads sleep instead of spinning, since the recognizer shares
    # these cores: Kokoro then takes a tenth less CPU for 4 % more wall time.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=providers
        )
    except ONNX_ERRORS as error:
        raise BackendUnavailable(backend, str(error)) from error
