"""A stage replica's health, judged by its recent calls."""

from __future__ import annotations

import pytest

from deployments.errors import BackendFailed, InvalidAudio, ModelUnavailable
from deployments.health import StageHealth


def _fail(health: StageHealth, error: Exception) -> None:
    with pytest.raises(type(error)), health.call():
        raise error


def test_repeated_failures_of_the_replica_make_it_unhealthy() -> None:
    health = StageHealth("transcription", limit=3)

    _fail(health, RuntimeError("CUDA error: out of memory"))
    _fail(health, ModelUnavailable("whisper-base", "gone"))
    health.check()
    _fail(health, MemoryError())

    with pytest.raises(RuntimeError, match=r"last 3 calls failed.*MemoryError"):
        health.check()


def test_a_success_or_a_bad_request_resets_the_count() -> None:
    health = StageHealth("synthesis", limit=2)

    _fail(health, RuntimeError("boom"))
    with health.call():
        pass
    _fail(health, RuntimeError("boom"))
    _fail(health, InvalidAudio("stereo"))
    _fail(health, RuntimeError("boom"))

    health.check()


def test_a_backend_that_fails_every_call_makes_the_replica_unhealthy() -> None:
    health = StageHealth("synthesis", limit=3)

    for _ in range(3):
        _fail(health, BackendFailed("kokoro", "ONNXRuntimeError: CUDA failure"))

    with pytest.raises(RuntimeError, match="BackendFailed"):
        health.check()


def test_a_batch_whose_every_item_failed_counts_as_a_failure() -> None:
    health = StageHealth("translation", limit=2)
    failed = BackendFailed("bergamot", "RuntimeError: model gone")

    for _ in range(2):
        with health.call() as outcome:
            outcome.judge_batch([failed, failed])
    with pytest.raises(RuntimeError, match="BackendFailed"):
        health.check()

    # One item translated: the backend works, whatever the others asked.
    with health.call() as outcome:
        outcome.judge_batch([failed, "translated"])
    health.check()
