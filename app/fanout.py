"""Live output of sessions to the connections of this replica, over Pub/Sub.

One Pub/Sub connection per replica carries the channels of every session that
has a connection here, whatever the number of sockets. Messages published
while that connection was down are lost; subscribers then get `RESYNC` and
read what they missed from the session's event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import StoreUnavailable
from app.store import SessionStore, translated_errors
from app.tasks import cancel_and_wait
from app.wire import EventRecord

logger = logging.getLogger("tolk.fanout")

RESYNC: Final = None
_QUEUE_LIMIT = 256
_RETRY_S = (0.1, 0.5, 1.0, 2.0)


class Subscription:
    """A connection's inbox: event records, or `RESYNC` when some may be lost."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(_QUEUE_LIMIT)

    def put(self, item: EventRecord | None) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # A slow socket: drop what is queued and let it catch up from the log.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    async def get(self) -> EventRecord | None:
        return await self._queue.get()


class Fanout:
    """Shares one Pub/Sub connection among all local subscribers."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pubsub = client.pubsub()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lost = False

    @asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[Subscription]:
        """Subscribes to a session; returns once Redis confirmed the subscription."""
        self._ensure_running()
        channel = SessionStore.channel(session_id)
        subscription = Subscription()
        members = self._subscribers.setdefault(channel, set())
        members.add(subscription)
        try:
            if channel not in self._confirmed:
                self._confirmed[channel] = asyncio.Event()
                async with translated_errors():
                    await self._pubsub.subscribe(channel)
                self._wake.set()
            try:
                await asyncio.wait_for(self._confirmed[channel].wait(), timeout=10)
            except TimeoutError as error:
                raise StoreUnavailable(
                    "Redis did not confirm a subscription"
                ) from error
            yield subscription
        finally:
            members.discard(subscription)
            if not members:
                del self._subscribers[channel]
                self._confirmed.pop(channel, None)
                await self._unsubscribe(channel)

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        await self._pubsub.aclose()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="tolk-fanout")

    async def _unsubscribe(self, channel: str) -> None:
        # If the connection is gone, so is the subscription; the listener
        # resubscribes only the channels that still have subscribers.
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                await self._pump()
                failures = 0
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                delay = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                failures += 1
                logger.warning("pubsub lost (%s); resubscribing in %.1fs", error, delay)
                await asyncio.sleep(delay)
                await self._pubsub.aclose()
                self._pubsub = self._client.pubsub()
                self._lost = True

    async def _pump(self) -> None:
        if not self._subscribers:
            self._wake.clear()
            await self._wake.wait()
            return
        if self._lost:
            await self._resubscribe()
            self._lost = False
            return
        if not self._pubsub.subscribed:
            # A first subscribe is still on its way to Redis.
            await asyncio.sleep(0.01)
            return

        message = await self._pubsub.get_message(timeout=1.0)
        if message is None:
            return

        channel = message["channel"].decode()
        if message["type"] == "subscribe" and channel in self._confirmed:
            self._confirmed[channel].set()
        elif message["type"] == "message":
            record = EventRecord.from_pubsub(message["data"])
            for subscription in self._subscribers.get(channel, ()):
                subscription.put(record)

    async def _resubscribe(self) -> None:
        channels = list(self._subscribers)
        for channel in channels:
            # The same event object: a subscriber may be waiting on it.
            self._confirmed.setdefault(channel, asyncio.Event()).clear()
        if channels:
            await self._pubsub.subscribe(*channels)
        for channel in channels:
            for subscription in self._subscribers.get(channel, ()):
                subscription.put(RESYNC)
