"""Live delivery of a session's events over Pub/Sub, against a real Redis."""

from __future__ import annotations

import asyncio

from app.fanout import Fanout
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
