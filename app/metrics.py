"""Prometheus metrics of the ingress, exported through Ray's metrics agent.

Ray prefixes each name with `ray_` and adds the deployment, replica and
application as tags; Prometheus scrapes them from every node's metrics port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray.serve import metrics

# How often the replica's count of asyncio tasks is taken.
_TASKS_SAMPLE_S = 5.0
# Seconds: from a quick Redis round trip to a voice struggling under load.
_LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class IngressMetrics:
    """What one ingress replica counts; every method is a no-op without Ray."""

    def __init__(self) -> None:
        self._on = ray.is_initialized()
        if not self._on:
            return
        self._connections = metrics.Gauge(
            "tolk_connections", "Open WebSocket connections on this replica."
        )
        self._sessions = metrics.Gauge(
            "tolk_sessions", "Sessions with a connection on this replica."
        )
        self._events = metrics.Counter(
            "tolk_events_total", "Output events logged, by type.", tag_keys=("type",)
        )
        self._stage_seconds = metrics.Histogram(
            "tolk_stage_seconds",
            "Stage calls as the ingress waits for them: queue, transfer, compute.",
            boundaries=_LATENCY_BOUNDARIES,
            tag_keys=("stage",),
        )
        self._stage_compute = metrics.Histogram(
            "tolk_stage_compute_seconds",
            "Compute time of stage calls, measured inside the stage.",
            boundaries=_LATENCY_BOUNDARIES,
            tag_keys=("stage",),
        )
        self._in_flight = metrics.Gauge(
            "tolk_stage_in_flight",
            "Stage calls sent and not yet answered: the queue in front of a stage.",
            tag_keys=("stage",),
        )
        self._early_finals = metrics.Counter(
            "tolk_early_finals_total",
            "Finals transcribed before the end of their utterance was certain, by "
            "outcome: used, wasted (speech went on) or failed.",
            tag_keys=("outcome",),
        )
        self._resumes = metrics.Counter(
            "tolk_resumes_total", "Connections that resumed from an earlier event."
        )
        self._replayed = metrics.Counter(
            "tolk_replayed_events_total", "Events sent again from the log."
        )
        self._recovery_impossible = metrics.Counter(
            "tolk_recovery_impossible_total",
            "Resumes whose missed events were gone, by reason.",
            tag_keys=("reason",),
        )
        self._errors = metrics.Counter(
            "tolk_errors_total", "Errors sent to clients, by code.", tag_keys=("code",)
        )
        self._tasks = metrics.Gauge(
            "tolk_tasks",
            "Asyncio tasks on the replica's event loop; growth with no more "
            "connections open is a leak.",
        )
        self._open = 0
        self._in_flight_by_stage: dict[str, int] = {}

    async def watch_tasks(self) -> None:
        """Samples the event loop's task count until cancelled."""
        while self._on:
            self._tasks.set(len(asyncio.all_tasks()))
            await asyncio.sleep(_TASKS_SAMPLE_S)

    def connection_opened(self) -> None:
        if self._on:
            self._open += 1
            self._connections.set(self._open)

    def connection_closed(self) -> None:
        if self._on:
            self._open -= 1
            self._connections.set(self._open)

    def sessions(self, count: int) -> None:
        if self._on:
            self._sessions.set(count)

    def event(self, event_type: str) -> None:
        if self._on:
            self._events.inc(tags={"type": event_type})

    @contextmanager
    def stage_call(self, stage: str) -> Iterator[None]:
        """Times one stage call and counts it as in flight meanwhile."""
        if not self._on:
            yield
            return
        self._change_in_flight(stage, 1)
        started = time.perf_counter()
        try:
            yield
        finally:
            self._stage_seconds.observe(
                time.perf_counter() - started, tags={"stage": stage}
            )
            self._change_in_flight(stage, -1)

    def stage_compute(self, stage: str, seconds: float) -> None:
        if self._on:
            self._stage_compute.observe(seconds, tags={"stage": stage})

    def early_final(self, outcome: str) -> None:
        if self._on:
            self._early_finals.inc(tags={"outcome": outcome})

    def resumed(self) -> None:
        if self._on:
            self._resumes.inc()

    def replayed(self, count: int) -> None:
        if self._on and count:
            self._replayed.inc(count)

    def recovery_impossible(self, reason: str) -> None:
        if self._on:
            self._recovery_impossible.inc(tags={"reason": reason})

    def error(self, code: str) -> None:
        if self._on:
            self._errors.inc(tags={"code": code})

    def _change_in_flight(self, stage: str, change: int) -> None:
        count = self._in_flight_by_stage.get(stage, 0) + change
        self._in_flight_by_stage[stage] = count
        self._in_flight.set(count, tags={"stage": stage})
