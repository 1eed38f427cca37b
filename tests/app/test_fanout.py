"""Live delivery of a session's events over Pub/Sub, against a real Redis."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

from app.embedded_redis import EmbeddedRedis
from app.fanout import RESYNC, Fanout
from app.protocol import Partial, SessionRequest
from app.store import SessionStore

REQUEST = SessionRequest(source="en", targets=["es"], sample_rate=16000)


async def test_fanout_delivers_to_every_subscriber(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    fanout = Fanout(store.client)
    try:
        async with (
            fanout.subscribe(session_id) as first,
            fanout.subscribe(session_id) as second,
        ):
            await store.emit(session_id, Partial(utterance=1, text="a"))
            await store.emit(session_id, Partial(utterance=1, text="b"))

            for inbox in (first, second):
                got = [await asyncio.wait_for(inbox.get(), 5) for _ in range(2)]
                assert [r.id for r in got if r is not None] == [1, 2]
    finally:
        await fanout.aclose()


async def test_fanout_resubscribes_after_a_redis_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        store = SessionStore(server.url, ttl_s=60, max_events=50)
        fanout = Fanout(store.client)
        session_id, _ = await store.create(REQUEST)
        try:
            async with fanout.subscribe(session_id) as inbox:
                await asyncio.to_thread(server.restart)

                # Subscribers learn that live messages may have been missed...
                assert await asyncio.wait_for(inbox.get(), 15) is RESYNC
                # ...and live delivery works again without any help.
                await store.emit(session_id, Partial(utterance=1, text="again"))
                record = await asyncio.wait_for(inbox.get(), 5)
                assert record is not None and record.id == 1
        finally:
            await fanout.aclose()
            await store.aclose()


async def test_fanout_holds_one_connection_for_all_subscribers(
    store: SessionStore,
) -> None:
    sessions = [(await store.create(REQUEST))[0] for _ in range(20)]

    async def clients() -> int:
        return int((await store.client.info("clients"))["connected_clients"])

    before = await clients()
    counts = []
    for _ in range(3):
        fanout = Fanout(store.client)
        async with AsyncExitStack() as stack:
            for session_id in sessions:
                await stack.enter_async_context(fanout.subscribe(session_id))
            during = await clients()
        await fanout.aclose()
        counts.append((during, await clients()))

    # One Pub/Sub connection for twenty sessions, handed back to the pool
    # when closed, and reused rather than added to the next time.
    assert counts[0][0] == before + 1
    assert counts[0] == counts[1] == counts[2]
