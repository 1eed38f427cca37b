"""The session store against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import LeaseLost, SessionNotFound, Unauthorized
from app.fanout import Fanout
from app.protocol import AudioHeader, Partial, SessionRequest
from app.store import AudioWrite, SessionStore

REQUEST = SessionRequest(source="en", targets=["es", "pt"], sample_rate=22050)


async def test_store_authenticates_only_the_right_token(store: SessionStore) -> None:
    session_id, token = await store.create(REQUEST)

    config = await store.authenticate(session_id, token)

    assert config.targets == ["es", "pt"] and config.sample_rate == 22050
    with pytest.raises(Unauthorized):
        await store.authenticate(session_id, token + "x")
    other_id, _ = await store.create(REQUEST)
    with pytest.raises(Unauthorized):
        await store.authenticate(other_id, token)
    with pytest.raises(SessionNotFound):
        await store.authenticate("nope", token)


async def test_store_keeps_no_plain_token(store: SessionStore) -> None:
    session_id, token = await store.create(REQUEST)

    keys = await store.client.keys("*")
    values = [await store.client.hgetall(k) for k in keys]

    assert token.encode() not in repr(values).encode()
    assert all(session_id.encode() in k for k in keys)


async def test_store_event_ids_increase_and_replay(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    ids = [
        await store.emit(session_id, Partial(utterance=1, text=f"w{i}"))
        for i in range(5)
    ]
    audio_id = await store.emit(
        session_id,
        AudioHeader(utterance=1, language="es", segment=0, sample_rate=24000, bytes=4),
        b"\x00\n\x01\x02",
    )

    assert ids == [1, 2, 3, 4, 5] and audio_id == 6
    replay = await store.events_after(session_id, 3)
    assert [r.id for r in replay] == [4, 5, 6]
    assert replay[-1].payload == b"\x00\n\x01\x02"
    assert await store.last_event_id(session_id) == 6


async def test_store_audio_writes_number_utterances(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    await store.write_audio(
        session_id, AudioWrite(input_samples=10, segmenter_state=b"s1", append=b"ab")
    )
    numbers = await store.write_audio(
        session_id,
        AudioWrite(
            input_samples=10,
            segmenter_state=b"s2",
            append=b"cd",
            replace=b"xy",
            ended=(b"first", b"second"),
        ),
    )

    snapshot = await store.snapshot(session_id)
    assert numbers == [1, 2]
    assert snapshot.pending_audio == b"xycd"
    assert snapshot.segmenter_state == b"s2"
    assert snapshot.unprocessed == {1: b"first", 2: b"second"}

    assert await store.acquire_lease(session_id, "me", 5000)
    await store.complete_utterance(session_id, 1, "context", owner="me")
    snapshot = await store.snapshot(session_id)
    assert snapshot.unprocessed == {2: b"second"} and snapshot.context == "context"


async def test_store_refuses_writes_to_expired_sessions(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.client.delete(*await store.client.keys("*"))

    with pytest.raises(SessionNotFound):
        await store.emit(session_id, Partial(utterance=1, text="late"))
    with pytest.raises(SessionNotFound):
        await store.write_audio(
            session_id, AudioWrite(input_samples=1, segmenter_state=b"")
        )


async def test_store_sessions_expire(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.emit(session_id, Partial(utterance=1, text="x"))

    ttls = [await store.client.ttl(k) for k in await store.client.keys("*")]

    assert ttls and all(0 < ttl <= 60 for ttl in ttls)


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


async def test_lease_fences_a_replica_that_lost_it(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    assert await store.acquire_lease(session_id, "old", 100)
    assert not await store.acquire_lease(session_id, "new", 5000)
    await store.emit(session_id, Partial(utterance=1, text="a"), owner="old")

    await asyncio.sleep(0.2)
    assert await store.acquire_lease(session_id, "new", 5000)

    with pytest.raises(LeaseLost):
        await store.emit(session_id, Partial(utterance=1, text="b"), owner="old")
    with pytest.raises(LeaseLost):
        await store.complete_utterance(session_id, 1, "", owner="old")
    assert [r.id for r in await store.events_after(session_id, 0)] == [1]


async def test_lease_release_only_by_its_holder(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    assert await store.acquire_lease(session_id, "a", 5000)

    await store.release_lease(session_id, "b")
    assert not await store.acquire_lease(session_id, "b", 5000)
    await store.release_lease(session_id, "a")
    assert await store.acquire_lease(session_id, "b", 5000)


async def test_store_updates_do_not_resurrect_sessions(store: SessionStore) -> None:
    session_id, token = await store.create(REQUEST)
    await store.client.delete(*await store.client.keys("*"))

    with pytest.raises(SessionNotFound):
        await store.set_sample_rate(session_id, 48000)
    assert await store.client.keys("*") == []
    with pytest.raises(SessionNotFound):
        await store.authenticate(session_id, token)


async def test_store_lists_pending_utterances_in_order(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.write_audio(
        session_id,
        AudioWrite(input_samples=1, segmenter_state=b"", ended=(b"one", b"two")),
    )

    assert await store.pending_utterances(session_id) == [1, 2]
    assert await store.utterance(session_id, 2) == b"two"
    assert await store.utterance(session_id, 3) is None
