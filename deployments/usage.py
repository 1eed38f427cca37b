"""CPU time of a stage replica, reported with each result.

The reading is the replica process's CPU time since it started: threads of
the model runtimes included, and calls that overlap counted once. Whoever
keeps the latest reading of each replica can tell what a stretch of work cost.
"""

from __future__ import annotations

import os
import time

from ray import serve
from ray.serve.exceptions import RayServeException

from deployments.schema import ReplicaUsage


def replica_usage() -> ReplicaUsage:
    """This process's CPU seconds, named by its Serve replica (or its pid)."""
    try:
        replica = serve.get_replica_context().replica_id.unique_id
    except RayServeException:
        # Outside Serve, e.g. the in-process benchmark baseline.
        replica = f"pid-{os.getpid()}"
    return ReplicaUsage(replica=replica, cpu_s=round(time.process_time(), 3))
