"""Whether a stage replica can still do its work, judged by its recent calls."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from deployments.errors import (
    BackendFailed,
    BackendUnavailable,
    ModelUnavailable,
    StageError,
)

logger = logging.getLogger("tolk.stage.health")

# Raised on purpose about one request: the caller's input, not the replica.
_REQUEST_ERRORS = (StageError,)
# Raised on purpose, but saying that the replica itself lacks its model, or
# that its runtime (CUDA, ONNX, a backend's process) failed: backends report
# faults of the input as InvalidAudio or Unsupported*, never as BackendFailed.
_REPLICA_ERRORS = (ModelUnavailable, BackendUnavailable, BackendFailed)


@dataclass
class CallOutcome:
    """What a call that did not raise wants counted: a failure of the replica."""

    failure: BaseException | None = None

    def judge_batch(self, results: Sequence[object]) -> None:
        """A batch every item of which failed for the replica's sake failed."""
        failures = [r for r in results if isinstance(r, _REPLICA_ERRORS)]
        if results and len(failures) == len(results):
            self.failure = failures[0]


class StageHealth:
    """Counts calls that failed for reasons of the replica, not of the request.

    A model that stops working (a GPU in a bad state, memory exhausted, model
    files gone) fails every call; after `limit` such failures in a row
    `check` raises, and Serve replaces the replica.
    """

    def __init__(self, stage: str, limit: int = 3) -> None:
        self._stage = stage
        self._limit = limit
        self._failures = 0
        self._last: BaseException | None = None

    @contextmanager
    def call(self) -> Iterator[CallOutcome]:
        """Wraps one stage call; what it raises is passed on unchanged.

        A call that returns its errors instead (a batch answers each caller
        apart) sets `failure` on the yielded outcome.
        """
        outcome = CallOutcome()
        try:
            yield outcome
        except _REPLICA_ERRORS as error:
            self._failed(error)
            raise
        except _REQUEST_ERRORS:
            self._failures = 0
            raise
        except Exception as error:
            self._failed(error)
            raise
        if outcome.failure is None:
            self._failures = 0
        else:
            self._failed(outcome.failure)

    def check(self) -> None:
        """Raises while the last `limit` calls all failed for the replica's sake."""
        if self._failures >= self._limit:
            raise RuntimeError(
                f"{self._stage}: the last {self._failures} calls failed, the "
                f"latest with {type(self._last).__name__}: {self._last}"
            )

    def _failed(self, error: BaseException) -> None:
        self._failures += 1
        self._last = error
        logger.error(
            "%s call failed (%d in a row): %s",
            self._stage,
            self._failures,
            type(error).__name__,
        )
