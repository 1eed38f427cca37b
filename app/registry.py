"""The processors running on this replica, one per session being spoken to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.metrics import IngressMetrics
from app.phrasing import PhrasingConfig
from app.processor import SessionProcessor
from app.segmenter import Segmenter
from app.stages import Stages
from app.store import SessionConfig, SessionStore

logger = logging.getLogger("tolk.processor")


class ProcessorRegistry:
    """Starts a session's processor on first audio, stops it when idle and unused."""

    def __init__(
        self,
        store: SessionStore,
        stages: Stages,
        segmenter: Segmenter,
        *,
        context_chars: int,
        phrasing: PhrasingConfig,
        metrics: IngressMetrics,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._stages = stages
        self._segmenter = segmenter
        self._context_chars = context_chars
        self._phrasing = phrasing
        self._processors: dict[str, SessionProcessor] = {}
        self._starting: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._processors)

    @asynccontextmanager
    async def attach(self, config: SessionConfig) -> AsyncIterator[SessionProcessor]:
        """The session's processor, started here if needed, for one connection."""
        processor = await self._get_or_start(config)
        processor.connections += 1
        try:
            yield processor
        finally:
            processor.connections -= 1
            if not processor.busy:
                self._release_if_unused(processor)

    async def aclose(self) -> None:
        processors = list(self._processors.values())
        self._processors.clear()
        await asyncio.gather(*(p.aclose() for p in processors))

    async def _get_or_start(self, config: SessionConfig) -> SessionProcessor:
        session_id = config.session_id
        lock = self._starting.setdefault(session_id, asyncio.Lock())
        async with lock:
            processor = self._processors.get(session_id)
            if processor is None:
                processor = SessionProcessor(
                    config,
                    self._store,
                    self._stages,
                    self._segmenter,
                    context_chars=self._context_chars,
                    phrasing=self._phrasing,
                    on_idle=self._release_if_unused,
                    on_event=self._metrics.event,
                    on_early_final=self._metrics.early_final,
                )
                processor.start()
                self._processors[session_id] = processor
                self._metrics.sessions(len(self._processors))
                logger.info("session %s: processing on this replica", session_id)
        return processor

    def _release_if_unused(self, processor: SessionProcessor) -> None:
        if processor.connections > 0 and processor.failure is None:
            return
        if self._processors.get(processor.session_id) is not processor:
            return
        del self._processors[processor.session_id]
        self._starting.pop(processor.session_id, None)
        self._metrics.sessions(len(self._processors))
        asyncio.get_running_loop().create_task(processor.aclose())
        logger.info("session %s: processing released", processor.session_id)
