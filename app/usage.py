"""What the stages' replicas have spent, as heard by this ingress replica.

Every stage result carries its replica's process CPU time (see
`deployments.usage`). The ledger keeps the latest reading per replica and
flushes it to Redis now and then, where the readings of all ingress replicas
meet and only the highest of each is kept. A tool that reads them twice can
tell what the work in between cost each stage.
"""

from __future__ import annotations

import asyncio
import logging

from app.errors import StoreUnavailable
from app.store import SessionStore
from deployments.schema import ReplicaUsage

logger = logging.getLogger("tolk.usage")

FLUSH_S = 1.0


class UsageLedger:
    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self._latest: dict[tuple[str, str], float] = {}
        self._dirty = False

    def note(self, stage: str, usage: ReplicaUsage | None) -> None:
        if usage is None:
            return
        key = (stage, usage.replica)
        if usage.cpu_s > self._latest.get(key, -1.0):
            self._latest[key] = usage.cpu_s
            self._dirty = True

    async def run(self) -> None:
        """Flushes new readings every `FLUSH_S` seconds until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_S)
            if not self._dirty:
                continue
            self._dirty = False
            try:
                await self._store.record_usage(dict(self._latest))
            except StoreUnavailable:
                # Readings are cumulative: the next flush carries these too.
                self._dirty = True
