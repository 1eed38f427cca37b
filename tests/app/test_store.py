"""The session store against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from app.embedded_redis import EmbeddedRedis
from app.errors import (
    InputMoved,
    InputThrottled,
    LeaseLost,
    SessionEnded,
    SessionNotFound,
    TooManySessions,
    Unauthorized,
)
from app.fanout import Fanout
from app.protocol import AudioHeader, Final, Partial, SessionRequest
from app.segmenter import FRAME_BYTES, FRAME_SAMPLES, EndedUtterance
from app.store import AudioPace, EndJob, InputWrite, SessionStore, UtteranceJob

REQUEST = SessionRequest(source="en", targets=["es", "pt"], sample_rate=22050)

StoreFactory = Callable[..., Awaitable[SessionStore]]


@pytest.fixture
async def store_with(redis_server: EmbeddedRedis) -> AsyncIterator[StoreFactory]:
    """Stores with options of their own on the tests' Redis, emptied first."""
    opened: list[SessionStore] = []

    async def make(**options: Any) -> SessionStore:
        settings = {"ttl_s": 60, "max_events": 50, **options}
        store = SessionStore(redis_server.url, **settings)
        if not opened:
            await store.client.flushdb()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.aclose()


def utterance(index: int) -> EndedUtterance:
    """A distinct ended utterance of two frames."""
    pcm = bytes([index]) * (2 * FRAME_BYTES)
    return EndedUtterance(pcm=pcm, start_ms=index * 1000, end_ms=index * 1000 + 64)


def chunk(
    version: int,
    samples: int = FRAME_SAMPLES,
    *,
    ended: tuple[EndedUtterance, ...] = (),
    append: bytes = b"",
    replace: bytes | None = None,
    end: bool = False,
    sample_rate: int | None = None,
    segmenter_state: bytes = b"seg",
    resampler_state: bytes = b"res",
) -> InputWrite:
    """One chunk's effect, written where the writer saw the input at `version`."""
    return InputWrite(
        expected_version=version,
        samples=samples,
        segmenter_state=segmenter_state,
        resampler_state=resampler_state,
        append=append,
        replace=replace,
        ended=tuple(u.to_bytes() for u in ended),
        end=end,
        sample_rate=sample_rate,
    )


def final(text: str) -> Final:
    return Final(utterance=1, text=text, language="en", start_ms=0, end_ms=10)


async def stored_epoch(store: SessionStore, session_id: str) -> str:
    epoch = await store.client.hget(f"tolk:{{{session_id}}}:session", "epoch")
    return epoch.decode()


# Sessions and tokens.


async def test_store_authenticates_only_the_right_token(store: SessionStore) -> None:
    session_id, token = await store.create(REQUEST)

    config = await store.authenticate(session_id, token)

    assert config.targets == ["es", "pt"] and config.sample_rate == 22050
    assert config.source == "en" and config.session_id == session_id
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


async def test_listener_tokens_open_their_session_to_listen(
    store: SessionStore,
) -> None:
    session_id, speaker = await store.create(REQUEST, "key1")
    listener = await store.add_listener(session_id, limit=2)
    assert listener is not None
    assert await store.add_listener(session_id, limit=2) is not None
    assert await store.add_listener(session_id, limit=2) is None
    other_id, _ = await store.create(REQUEST)

    assert (await store.authenticate(session_id, speaker)).role == "speaker"
    assert (await store.authenticate(session_id, listener)).role == "listener"
    with pytest.raises(Unauthorized):
        await store.authenticate(other_id, listener)
    with pytest.raises(SessionNotFound):
        await store.add_listener("nope", limit=2)
    # Listener tokens are kept as digests, and go with the session.
    keys = await store.client.keys("*")
    dump = repr([await store.client.dump(k) for k in keys])
    assert listener not in dump
    await store.close(session_id)
    with pytest.raises(SessionEnded):
        await store.authenticate(session_id, listener)


async def test_target_languages_are_added_once_up_to_the_limit(
    store: SessionStore,
) -> None:
    session_id, speaker = await store.create(REQUEST)

    assert await store.add_target(session_id, "fr", limit=4) == "added"
    assert await store.add_target(session_id, "fr", limit=4) == "present"
    assert await store.add_target(session_id, "es", limit=4) == "present"
    assert await store.add_target(session_id, "de", limit=4) == "added"
    assert await store.add_target(session_id, "it", limit=4) == "full"
    # The processor reads the list with each job, the ready message from it too.
    assert (await store.next_job(session_id, 0)).targets == ["es", "pt", "fr", "de"]
    config = await store.authenticate(session_id, speaker)
    assert config.targets == ["es", "pt", "fr", "de"]
    with pytest.raises(SessionNotFound):
        await store.add_target("nope", "fr", limit=4)


async def test_an_api_key_has_a_bounded_number_of_sessions(
    store_with: StoreFactory,
) -> None:
    store = await store_with(ttl_s=1)
    first, _ = await store.create(REQUEST, "key-a", key_limit=2)
    idle, _ = await store.create(REQUEST, "key-a", key_limit=2)
    with pytest.raises(TooManySessions) as refused:
        await store.create(REQUEST, "key-a", key_limit=2)
    # A refused session leaves nothing behind.
    assert not await store.exists(refused.value.session_id)
    # Other keys have their own count; an ended session frees a place.
    await store.create(REQUEST, "key-b", key_limit=2)
    await store.close(first)
    in_use, _ = await store.create(REQUEST, "key-a", key_limit=2)

    # A session in use counts for as long as it lives, far past one TTL;
    # an idle one stops counting once it has expired.
    for _ in range(4):
        await asyncio.sleep(0.5)
        await store.touch(in_use)
    assert not await store.exists(idle)
    await store.create(REQUEST, "key-a", key_limit=2)
    with pytest.raises(TooManySessions):
        await store.create(REQUEST, "key-a", key_limit=2)


async def test_connections_are_counted_up_to_the_limit(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    assert await store.join(session_id, "a", 2, stale_ms=60_000)
    assert await store.join(session_id, "b", 2, stale_ms=60_000)
    assert not await store.join(session_id, "c", 2, stale_ms=60_000)
    # One already counted renews its place; one that left frees it.
    assert await store.join(session_id, "a", 2, stale_ms=60_000)
    await store.leave(session_id, "b")
    assert await store.join(session_id, "c", 2, stale_ms=60_000)


async def test_connections_that_went_quiet_stop_counting(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    assert await store.join(session_id, "a", 1, stale_ms=200)
    assert not await store.join(session_id, "b", 1, stale_ms=200)
    await asyncio.sleep(0.3)
    assert await store.join(session_id, "b", 1, stale_ms=200)
    with pytest.raises(SessionNotFound):
        await store.join("nope", "a", 1, stale_ms=200)


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


async def test_store_refuses_writes_to_expired_sessions(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.client.delete(*await store.client.keys("*"))

    with pytest.raises(SessionNotFound):
        await store.emit(session_id, Partial(utterance=1, text="late"))
    with pytest.raises(SessionNotFound):
        await store.write_input(session_id, chunk(0))
    with pytest.raises(SessionNotFound):
        await store.input_state(session_id)
    with pytest.raises(SessionNotFound):
        await store.acquire_lease(session_id, 5000)


async def test_store_sessions_expire(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.write_input(session_id, chunk(0, append=b"ab", ended=(utterance(1),)))
    token = await store.acquire_lease(session_id, 5000)
    await store.emit(session_id, Partial(utterance=1, text="x"), step="j1:partial")

    ttls = {k: await store.client.pttl(k) for k in await store.client.keys("*")}

    lease = f"tolk:{{{session_id}}}:lease".encode()
    assert token and 0 < ttls.pop(lease) <= 5000
    assert len(ttls) == 5 and all(0 < ttl <= 60_000 for ttl in ttls.values())


async def test_store_updates_do_not_resurrect_sessions(store: SessionStore) -> None:
    session_id, token = await store.create(REQUEST)
    await store.client.delete(*await store.client.keys("*"))

    with pytest.raises(SessionNotFound):
        await store.write_input(session_id, chunk(0, sample_rate=48000, end=True))
    with pytest.raises(SessionNotFound):
        await store.resume(session_id, None, 0)
    with pytest.raises(SessionNotFound):
        await store.complete_job(session_id, 1, "context", owner="1-x")
    await store.touch(session_id)

    assert await store.client.keys("*") == []
    with pytest.raises(SessionNotFound):
        await store.authenticate(session_id, token)


# Input.


async def test_write_input_applies_only_at_the_expected_version(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)

    written = await store.write_input(session_id, chunk(0, 512, append=b"ab"))
    assert written.position == 512 and written.version == 1
    assert written.utterances == []

    with pytest.raises(InputMoved) as moved:
        await store.write_input(session_id, chunk(0, 512, append=b"cd"))
    assert moved.value.position == 512
    with pytest.raises(InputMoved) as moved:
        await store.write_input(session_id, chunk(7, 512, append=b"cd"))
    assert moved.value.position == 512

    state = await store.input_state(session_id)
    assert state.position == 512 and state.pending_audio == b"ab"
    assert state.version == 1
    written = await store.write_input(session_id, chunk(1, 256, append=b"cd"))
    assert written.position == 768 and written.version == 2


async def test_writes_that_move_no_sample_still_fence_stale_writers(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.write_input(session_id, chunk(0, 100, append=b"ab"))

    # An `end` changes the input without moving its position...
    await store.write_input(session_id, chunk(1, 0, replace=b"", end=True))

    # ...so a writer that read the input before it is refused all the same.
    with pytest.raises(InputMoved):
        await store.write_input(session_id, chunk(1, 100, append=b"cd"))
    assert (await store.input_state(session_id)).pending_audio == b""


async def test_write_input_appends_and_replaces_pending_audio(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    state = await store.input_state(session_id)
    assert state.pending_audio == b"" and state.position == 0
    assert state.segmenter_state is None and state.resampler_state is None

    await store.write_input(session_id, chunk(0, 10, append=b"ab"))
    await store.write_input(session_id, chunk(1, 10, append=b"cd"))
    assert (await store.input_state(session_id)).pending_audio == b"abcd"

    # A replaced buffer is the new content; the append follows it.
    await store.write_input(session_id, chunk(2, 10, replace=b"xy", append=b"ef"))
    assert (await store.input_state(session_id)).pending_audio == b"xyef"

    await store.write_input(session_id, chunk(3, 10, replace=b""))
    assert (await store.input_state(session_id)).pending_audio == b""


async def test_write_input_stores_filter_states_and_sample_rate(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    assert (await store.input_state(session_id)).sample_rate == 22050

    await store.write_input(
        session_id,
        chunk(0, segmenter_state=b"s1", resampler_state=b"r1", sample_rate=48000),
    )
    state = await store.input_state(session_id)
    assert state.segmenter_state == b"s1" and state.resampler_state == b"r1"
    assert state.sample_rate == 48000

    # Without a sample rate the stored one stays.
    await store.write_input(
        session_id,
        chunk(1, segmenter_state=b"s2", resampler_state=b"r2"),
    )
    state = await store.input_state(session_id)
    assert state.segmenter_state == b"s2" and state.resampler_state == b"r2"
    assert state.sample_rate == 48000 and state.position == 2 * FRAME_SAMPLES


async def test_ended_utterances_become_numbered_jobs(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    first, second, third = utterance(1), utterance(2), utterance(3)

    written = await store.write_input(session_id, chunk(0, ended=(first, second)))
    assert written.utterances == [1, 2]
    written = await store.write_input(
        session_id, chunk(written.version, ended=(third,))
    )
    assert written.utterances == [3]

    assert await store.pending_jobs(session_id) == [1, 2, 3]
    assert (await store.next_job(session_id, 0)).job == UtteranceJob(
        seq=1, number=1, utterance=first
    )
    upcoming = await store.next_job(session_id, 2)
    assert upcoming.job == UtteranceJob(seq=3, number=3, utterance=third)
    assert upcoming.pending == 3 and upcoming.steps == {}
    assert (await store.input_state(session_id)).utterances == 3
    assert (await store.next_job(session_id, 3)).job is None


async def test_pending_jobs_are_in_sequence_order(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    ended = tuple(utterance(i) for i in range(12))

    await store.write_input(session_id, chunk(0, ended=ended))

    # Numerically, not as strings: 10 comes after 9.
    assert await store.pending_jobs(session_id) == list(range(1, 13))
    upcoming = await store.next_job(session_id, 9)
    assert upcoming.job is not None and upcoming.job.seq == 10


async def test_end_queues_one_end_job_per_position(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    written = await store.write_input(
        session_id, chunk(0, ended=(utterance(1), utterance(2)), end=True)
    )
    assert written.utterances == [1, 2]
    # The end comes after the utterances that ended in the same chunk.
    assert await store.pending_jobs(session_id) == [1, 2, 3]
    assert (await store.next_job(session_id, 2)).job == EndJob(seq=3, utterances=2)

    # A repeated end, e.g. after a reconnection, asks for nothing new.
    written = await store.write_input(session_id, chunk(written.version, 0, end=True))
    assert await store.pending_jobs(session_id) == [1, 2, 3]

    written = await store.write_input(
        session_id, chunk(written.version, ended=(utterance(3),), end=True)
    )
    assert written.utterances == [3]
    assert await store.pending_jobs(session_id) == [1, 2, 3, 4, 5]
    assert (await store.next_job(session_id, 4)).job == EndJob(seq=5, utterances=3)


async def test_end_without_any_audio_is_queued(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    await store.write_input(session_id, chunk(0, 0, end=True))
    await store.write_input(session_id, chunk(1, 0, end=True))

    assert await store.pending_jobs(session_id) == [1]
    assert (await store.next_job(session_id, 0)).job == EndJob(seq=1, utterances=0)


async def test_one_of_many_concurrent_writes_wins(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    results = await asyncio.gather(
        *(
            store.write_input(session_id, chunk(0, 100 + i, append=bytes([i])))
            for i in range(20)
        ),
        return_exceptions=True,
    )

    won = [r for r in results if not isinstance(r, BaseException)]
    moved = [r for r in results if isinstance(r, InputMoved)]
    assert len(won) == 1 and len(moved) == 19
    assert all(error.position == won[0].position for error in moved)
    state = await store.input_state(session_id)
    assert state.position == won[0].position
    assert state.pending_audio == bytes([won[0].position - 100])


# Output.


async def test_a_step_is_logged_and_published_once(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    fanout = Fanout(store.client)
    try:
        async with fanout.subscribe(session_id) as inbox:
            first = await store.emit(session_id, final("a"), step="j1:final")
            again = await store.emit(session_id, final("other"), step="j1:final")
            after = await store.emit(session_id, Partial(utterance=2, text="b"))

            got = [await asyncio.wait_for(inbox.get(), 5) for _ in range(2)]
    finally:
        await fanout.aclose()

    assert (first, again, after) == (1, 1, 2)
    assert [r.id for r in got if r is not None] == [1, 2]
    assert [r.id for r in await store.events_after(session_id, 0)] == [1, 2]
    assert await store.last_event_id(session_id) == 2


async def test_logged_steps_are_those_of_one_job(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.write_input(
        session_id, chunk(0, ended=tuple(map(utterance, range(12))))
    )
    ids = {
        step: await store.emit(session_id, final(step), step=step)
        for step in ("j1:final", "j1:es", "j2:final", "j12:final")
    }

    assert (await store.next_job(session_id, 0)).steps == {
        "final": ids["j1:final"],
        "es": ids["j1:es"],
    }
    assert (await store.next_job(session_id, 11)).steps == {"final": ids["j12:final"]}
    assert (await store.next_job(session_id, 2)).steps == {}


async def test_event_reads_back_one_record(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.emit(session_id, Partial(utterance=1, text="a"))
    header = AudioHeader(
        utterance=1, language="es", segment=0, sample_rate=24000, bytes=2
    )
    event_id = await store.emit(session_id, header, b"\x01\x02")

    record = await store.event(session_id, event_id)

    assert record is not None and record.id == event_id == 2
    assert record.payload == b"\x01\x02" and '"type":"audio"' in record.text
    assert await store.event(session_id, 3) is None


async def test_complete_job_forgets_the_job_and_its_steps(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.write_input(session_id, chunk(0, ended=(utterance(1), utterance(2))))
    token = await store.acquire_lease(session_id, 5000)
    assert token
    await store.emit(session_id, final("a"), owner=token, step="j1:final")
    await store.emit(session_id, final("a"), owner=token, step="j1:es")
    second = await store.emit(session_id, final("b"), owner=token, step="j2:final")

    with pytest.raises(LeaseLost):
        await store.complete_job(session_id, 1, "stolen", owner=token + "x")
    assert await store.pending_jobs(session_id) == [1, 2]

    await store.complete_job(session_id, 1, "first words", owner=token)

    assert await store.pending_jobs(session_id) == [2]
    upcoming = await store.next_job(session_id, 0)
    assert upcoming.job is not None and upcoming.job.seq == 2
    assert upcoming.steps == {"final": second}
    assert upcoming.context == "first words"
    # Completing does not take the output back out of the log.
    assert [r.id for r in await store.events_after(session_id, 0)] == [1, 2, 3]


# The processing lease.


async def test_lease_is_held_by_one_replica_at_a_time(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    token = await store.acquire_lease(session_id, 5000)

    assert token
    assert await store.acquire_lease(session_id, 5000) is None
    assert await store.renew_lease(session_id, token, 5000)
    assert not await store.renew_lease(session_id, token + "x", 5000)
    assert await store.acquire_lease(session_id, 5000) is None


async def test_lease_for_jobs_is_taken_only_while_jobs_wait(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)

    assert await store.acquire_lease(session_id, 5000, for_jobs=True) is None
    await store.write_input(session_id, chunk(0, ended=(utterance(1),)))
    token = await store.acquire_lease(session_id, 5000, for_jobs=True)

    assert token
    assert await store.acquire_lease(session_id, 5000, for_jobs=True) is None
    await store.complete_job(session_id, 1, "", owner=token)
    await store.release_lease(session_id, token)
    assert await store.acquire_lease(session_id, 5000, for_jobs=True) is None


async def test_lease_fences_a_replica_that_lost_it(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.write_input(session_id, chunk(0, ended=(utterance(1),)))
    old = await store.acquire_lease(session_id, 100)
    assert old
    await store.emit(session_id, Partial(utterance=1, text="a"), owner=old)

    await asyncio.sleep(0.2)
    new = await store.acquire_lease(session_id, 5000)

    assert new and new != old
    assert int(new.split("-")[0]) > int(old.split("-")[0])
    with pytest.raises(LeaseLost):
        await store.emit(session_id, Partial(utterance=1, text="b"), owner=old)
    with pytest.raises(LeaseLost):
        await store.complete_job(session_id, 1, "", owner=old)
    assert not await store.renew_lease(session_id, old, 5000)
    assert [r.id for r in await store.events_after(session_id, 0)] == [1]
    assert await store.pending_jobs(session_id) == [1]
    assert await store.emit(session_id, Partial(utterance=1, text="c"), owner=new)


async def test_lease_release_only_by_its_holder(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    token = await store.acquire_lease(session_id, 5000)
    assert token

    await store.release_lease(session_id, token + "x")
    assert await store.acquire_lease(session_id, 5000) is None
    await store.release_lease(session_id, token)
    assert await store.acquire_lease(session_id, 5000)


# Resuming a connection.


async def test_resume_of_a_fresh_session(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    epoch = await stored_epoch(store, session_id)

    resume = await store.resume(session_id, None, 0)

    assert resume.status == "ok" and resume.epoch == epoch
    assert resume.last_event_id == 0 and resume.input_samples == 0
    assert (await store.resume(session_id, epoch, 0)).status == "ok"


async def test_resume_within_the_log(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    epoch = await stored_epoch(store, session_id)
    for i in range(5):
        await store.emit(session_id, Partial(utterance=1, text=f"w{i}"))

    for after in (0, 3, 5):
        resume = await store.resume(session_id, epoch, after)
        assert resume.status == "ok" and resume.epoch == epoch
        assert resume.last_event_id == 5


async def test_resume_reports_the_stored_input(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    await store.write_input(session_id, chunk(0, 320))

    resume = await store.resume(session_id, None, 0)

    assert resume.input_samples == 320


async def test_resume_before_the_oldest_kept_event_is_trimmed(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    epoch = await stored_epoch(store, session_id)
    # MAXLEN ~ trims whole stream nodes (100 entries), so well past max_events.
    for i in range(250):
        await store.emit(session_id, Partial(utterance=1, text=f"w{i}"))
    oldest = (await store.events_after(session_id, 0))[0].id
    assert oldest > 2

    resume = await store.resume(session_id, epoch, 1)

    assert resume.status == "trimmed" and resume.epoch == epoch
    assert resume.last_event_id == 250
    assert (await store.resume(session_id, epoch, oldest - 1)).status == "ok"
    assert await stored_epoch(store, session_id) == epoch


async def test_resume_from_another_epoch_is_history_lost(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    epoch = await stored_epoch(store, session_id)
    await store.emit(session_id, Partial(utterance=1, text="a"))

    resume = await store.resume(session_id, "elsewhere", 1)

    assert resume.status == "history_lost" and resume.epoch == epoch
    assert await stored_epoch(store, session_id) == epoch


async def test_resume_after_events_redis_lost_changes_the_epoch(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    old = await stored_epoch(store, session_id)
    for i in range(3):
        await store.emit(session_id, Partial(utterance=1, text=f"w{i}"))

    # The client saw event 5: Redis lost what it acknowledged.
    resume = await store.resume(session_id, old, 5)

    assert resume.status == "history_lost" and resume.last_event_id == 3
    assert resume.epoch != old
    assert await stored_epoch(store, session_id) == resume.epoch
    # Events up to the newest kept mean the same in both epochs: a client of
    # the old epoch that saw no more resumes exactly.
    kept = await store.resume(session_id, old, 2)
    assert kept.status == "ok" and kept.epoch == resume.epoch
    again = await store.resume(session_id, resume.epoch, 3)
    assert again.status == "ok" and again.epoch == resume.epoch


async def test_a_listener_claim_of_lost_events_keeps_the_epoch(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    epoch = await stored_epoch(store, session_id)
    for i in range(3):
        await store.emit(session_id, Partial(utterance=1, text=f"w{i}"))

    # A listener's token is shared widely: its claim moves nobody else on.
    for _ in range(2):
        claim = await store.resume(session_id, epoch, 2**53, speaker=False)
        assert claim.status == "history_lost" and claim.epoch == epoch
    assert await stored_epoch(store, session_id) == epoch
    assert (await store.resume(session_id, epoch, 1)).status == "ok"


async def test_resume_after_the_log_was_lost_changes_the_epoch(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    old = await stored_epoch(store, session_id)
    for i in range(3):
        await store.emit(session_id, Partial(utterance=1, text=f"w{i}"))
    await store.client.delete(f"tolk:{{{session_id}}}:events")

    resume = await store.resume(session_id, old, 3)

    assert resume.status == "history_lost" and resume.epoch != old
    assert resume.last_event_id == 3
    assert await stored_epoch(store, session_id) == resume.epoch
    # The loss is announced once: the new epoch resumes as usual.
    again = await store.resume(session_id, resume.epoch, 3)
    assert again.status == "ok" and again.epoch == resume.epoch


async def test_resume_from_an_old_epoch_keeps_the_current_one(
    store: SessionStore,
) -> None:
    session_id, _ = await store.create(REQUEST)
    old = await stored_epoch(store, session_id)
    for i in range(3):
        await store.emit(session_id, Partial(utterance=1, text=f"w{i}"))
    current = (await store.resume(session_id, old, 5)).epoch

    # Another client of the old epoch that also saw the lost events.
    resume = await store.resume(session_id, old, 5)

    assert resume.status == "history_lost" and resume.epoch == current
    assert (await store.resume(session_id, current, 3)).status == "ok"


async def test_resume_without_an_epoch_cannot_change_it(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    epoch = await stored_epoch(store, session_id)
    await store.emit(session_id, Partial(utterance=1, text="w"))

    # A client that claims events it cannot have, without knowing the epoch.
    resume = await store.resume(session_id, None, 10**9)

    assert resume.status == "history_lost" and resume.epoch == epoch
    assert await stored_epoch(store, session_id) == epoch


# Closing.


async def test_close_deletes_the_session_and_tells_its_connections(
    store: SessionStore,
) -> None:
    session_id, token = await store.create(REQUEST)
    await store.write_input(session_id, chunk(0, append=b"ab", ended=(utterance(1),)))
    owner = await store.acquire_lease(session_id, 5000)
    await store.emit(session_id, final("a"), owner=owner, step="j1:final")
    fanout = Fanout(store.client)
    try:
        async with fanout.subscribe(session_id) as inbox:
            assert await store.close(session_id)
            notice = await asyncio.wait_for(inbox.get(), 5)
    finally:
        await fanout.aclose()

    assert notice is not None and notice.is_notice
    assert await store.client.keys("*") == [f"tolk:{{{session_id}}}:closed".encode()]
    with pytest.raises(SessionEnded):
        await store.authenticate(session_id, token)
    assert not await store.exists(session_id)
    assert not await store.close(session_id)


async def test_close_of_an_unknown_session(store: SessionStore) -> None:
    assert not await store.close("nope")
    assert await store.client.keys("*") == []


async def test_usage_keeps_the_highest_reading_of_each_replica(
    store: SessionStore,
) -> None:
    # Two ingress replicas flush what they heard; one heard an older reading.
    await store.record_usage({("transcription", "r1"): 12.5, ("synthesis", "s1"): 3.0})
    await store.record_usage(
        {("transcription", "r1"): 10.0, ("transcription", "r2"): 1}
    )

    assert await store.usage() == {
        "transcription": {"r1": 12.5, "r2": 1.0},
        "synthesis": {"s1": 3.0},
    }


async def test_a_preview_of_an_ended_utterance_is_dropped(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)
    opened = await store.emit(
        session_id, Partial(utterance=1, text="hel"), while_open=1
    )

    # Utterance 1 ends, through whichever replica received its audio.
    await store.write_input(session_id, chunk(0, ended=(utterance(1),)))
    late = await store.emit(
        session_id, Partial(utterance=1, text="hello"), while_open=1
    )
    next_one = await store.emit(
        session_id, Partial(utterance=2, text="an"), while_open=2
    )

    assert (opened, late, next_one) == (1, 0, 2)
    assert [r.id for r in await store.events_after(session_id, 0)] == [1, 2]


async def test_the_audio_pace_is_the_session_s_over_all_writers(
    store_with: StoreFactory,
) -> None:
    pace = AudioPace(speed=2.0, burst_s=1.0)
    replicas = [await store_with(pace=pace) for _ in range(2)]
    session_id, _ = await replicas[0].create(REQUEST)
    one_second = replace(chunk(0), seconds=1.0)

    first = await replicas[0].write_input(session_id, one_second)
    # The burst is spent: the next second of audio, from another replica,
    # is half a second (at twice real time) ahead of the pace.
    second = await replicas[1].write_input(
        session_id, replace(one_second, expected_version=first.version)
    )
    assert first.pace_wait_s == 0
    assert 0.4 < second.pace_wait_s <= 0.5
    # Overdrawn: more audio is refused until the pace has caught up.
    # Waiting refills the bucket at the pace: 0.3 s gives 0.6 s of audio.
    await asyncio.sleep(0.3)
    third = replace(chunk(second.version), seconds=0.2)
    with pytest.raises(InputThrottled) as refused:
        await replicas[0].write_input(session_id, third)
    assert refused.value.wait_s is not None
    assert 0.1 < refused.value.wait_s <= 0.3
    await asyncio.sleep(refused.value.wait_s)
    accepted = await replicas[0].write_input(session_id, third)
    assert accepted.version == second.version + 1
    assert 0.05 < accepted.pace_wait_s <= 0.15


async def test_writes_say_how_many_jobs_wait(store: SessionStore) -> None:
    session_id, _ = await store.create(REQUEST)

    written = await store.write_input(
        session_id, chunk(0, ended=(utterance(1), utterance(2)))
    )
    ended = await store.write_input(session_id, chunk(written.version, end=True))

    assert written.pending_jobs == 2
    assert ended.pending_jobs == 3


async def test_the_log_keeps_a_bounded_number_of_bytes(
    store_with: StoreFactory,
) -> None:
    store = await store_with(max_log_bytes=3000)
    session_id, _ = await store.create(REQUEST)
    speech = AudioHeader(
        utterance=1, language="pt", segment=0, sample_rate=24000, bytes=1000
    )
    for _ in range(5):
        await store.emit(session_id, speech, b"\x01" * 1000)
    kept = await store.events_after(session_id, 0)
    # The oldest go first; what is left fits, and its size is counted.
    assert [record.id for record in kept] == [4, 5]
    size = sum(len(record.header) + len(record.payload) for record in kept)
    stored = await store.client.hget(f"tolk:{{{session_id}}}:session", "log_bytes")
    assert int(stored) == size <= 3000

    # An event bigger than the whole budget is still kept, alone.
    await store.emit(session_id, speech, b"\x02" * 5000)
    assert [r.id for r in await store.events_after(session_id, 0)] == [6]
    resume = await store.resume(session_id, None, 0)
    assert resume.status == "trimmed"

    # A log that Redis lost starts its count again.
    await store.client.delete(f"tolk:{{{session_id}}}:events")
    for _ in range(2):
        await store.emit(session_id, speech, b"\x03" * 1000)
    assert [r.id for r in await store.events_after(session_id, 0)] == [7, 8]

    # So does a log whose count is missing (written by an older version).
    await store.client.hdel(f"tolk:{{{session_id}}}:session", "log_bytes")
    await store.emit(session_id, speech, b"\x04" * 1000)
    kept = await store.events_after(session_id, 0)
    assert [r.id for r in kept] == [8, 9]
    stored = await store.client.hget(f"tolk:{{{session_id}}}:session", "log_bytes")
    assert int(stored) == sum(len(r.header) + len(r.payload) for r in kept)


async def test_a_backlog_is_waited_out_until_a_job_completes(
    store_with: StoreFactory,
) -> None:
    store = await store_with(max_pending_jobs=3)
    session_id, _ = await store.create(REQUEST)
    ended = (utterance(1), utterance(2), utterance(3))
    await store.write_input(session_id, chunk(0, ended=ended))
    token = await store.acquire_lease(session_id, 5000)
    assert token

    waiting = asyncio.create_task(store.wait_for_backlog(session_id, poll_s=0.05))
    await asyncio.sleep(0.3)
    assert not waiting.done()

    await store.complete_job(session_id, 1, "", owner=token)
    assert await asyncio.wait_for(waiting, 1) == 2
    assert await store.wait_for_backlog(session_id) == 2


async def test_audio_waits_while_the_stages_are_behind(
    store_with: StoreFactory,
) -> None:
    store = await store_with(max_pending_jobs=2)
    session_id, _ = await store.create(REQUEST)
    ended = (utterance(1), utterance(2))
    written = await store.write_input(session_id, chunk(0, ended=ended))
    assert written.pending_jobs == 2 and written.backlogged

    audio = replace(chunk(written.version), seconds=0.1)
    with pytest.raises(InputThrottled) as refused:
        await store.write_input(session_id, audio)
    assert refused.value.wait_s is None
    # Nothing of the refused chunk was stored; an `end` is still taken.
    ended_at = await store.write_input(session_id, chunk(written.version, end=True))
    assert ended_at.version == written.version + 1

    token = await store.acquire_lease(session_id, 5000)
    assert token
    await store.complete_job(session_id, 1, "", owner=token)
    await store.complete_job(session_id, 2, "", owner=token)
    again = await store.write_input(
        session_id, replace(audio, expected_version=ended_at.version)
    )
    assert again.pending_jobs == 1 and not again.backlogged
