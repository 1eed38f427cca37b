"""The session store: every session's state, in Redis, behind domain verbs.

Keys of one session share a hash tag so that scripts may touch them together
on a Redis Cluster:

    tolk:{SID}:session      hash: configuration, counters, recognizer context
    tolk:{SID}:audio        string: PCM16 16 kHz of the utterance in progress
    tolk:{SID}:utterances   hash: ended utterances not yet fully processed
    tolk:{SID}:events       stream: output events, entry id "<event id>-0"
    tolk:{SID}:lease        string: which processor may write output now
    tolk:{SID}:live         Pub/Sub channel: the same events, live

Every write refreshes the TTL of all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import LeaseLost, SessionNotFound, StoreUnavailable, Unauthorized
from app.protocol import SessionEvent, SessionRequest
from app.wire import EventRecord, header_body

T = TypeVar("T")

# Puts the id at the front of the header, logs the event and publishes it, in
# one step, so that log order, id order and publish order are the same.
_EMIT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
if ARGV[6] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[6] then
  return redis.error_reply('NOTOWNER')
end
local id = redis.call('HINCRBY', KEYS[1], 'next_event', 1)
local header = '{"id":' .. id .. ',' .. string.sub(ARGV[1], 2)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0',
           'h', header, 'b', ARGV[2])
redis.call('PUBLISH', ARGV[4], header .. '\\n' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return id
"""

# Applies the effect of one received chunk of audio; ended utterances move to
# the utterances hash under the next utterance numbers.
_AUDIO_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
local numbers = {}
for i = 7, #ARGV do
  local n = redis.call('HINCRBY', KEYS[1], 'utterances', 1)
  redis.call('HSET', KEYS[3], n, ARGV[i])
  numbers[#numbers + 1] = n
end
if ARGV[4] == '1' then redis.call('SET', KEYS[2], ARGV[5]) end
if #ARGV[3] > 0 then redis.call('APPEND', KEYS[2], ARGV[3]) end
redis.call('HINCRBY', KEYS[1], 'input_samples', ARGV[1])
redis.call('HSET', KEYS[1], 'segmenter', ARGV[2])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return numbers
"""

# Forgets an utterance once its output is logged; only the lease holder may.
_COMPLETE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return redis.error_reply('NOTOWNER') end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'context', ARGV[2])
return 1
"""

# Sets fields of a session that still exists, and refreshes its TTL.
_UPDATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return 1
"""

# The processing lease: taken when free, renewed by its holder.
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class SessionConfig:
    session_id: str
    source: str
    targets: list[str]
    sample_rate: int


@dataclass(frozen=True)
class StreamSnapshot:
    """What a replica needs to continue a session's input where it stopped."""

    pending_audio: bytes
    segmenter_state: bytes | None
    utterances: int
    unprocessed: dict[int, bytes]
    context: str


@dataclass(frozen=True)
class AudioWrite:
    """The effect of one received chunk, written in one transaction."""

    input_samples: int
    segmenter_state: bytes
    append: bytes = b""
    replace: bytes | None = None
    ended: tuple[bytes, ...] = ()


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise StoreUnavailable(str(error)) from error


class SessionStore:
    """Owns key names, TTLs and the scripts; speaks sessions, not Redis."""

    def __init__(self, url: str, *, ttl_s: int, max_events: int) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=15
        )
        self._ttl_s = ttl_s
        self._max_events = max_events
        self._emit = self._redis.register_script(_EMIT_SCRIPT)
        self._audio = self._redis.register_script(_AUDIO_SCRIPT)
        self._complete = self._redis.register_script(_COMPLETE_SCRIPT)
        self._update = self._redis.register_script(_UPDATE_SCRIPT)
        self._lease = self._redis.register_script(_LEASE_SCRIPT)
        self._release = self._redis.register_script(_RELEASE_SCRIPT)

    @property
    def client(self) -> redis.Redis:
        return self._redis

    async def aclose(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def channel(session_id: str) -> str:
        return f"tolk:{{{session_id}}}:live"

    @staticmethod
    def _key(session_id: str, name: str) -> str:
        return f"tolk:{{{session_id}}}:{name}"

    def _keys(self, session_id: str) -> list[str]:
        return [
            self._key(session_id, name)
            for name in ("session", "audio", "utterances", "events")
        ]

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        async with translated_errors():
            return await operation()

    async def _script(
        self, session_id: str, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await self._call(lambda: script(keys=keys, args=args))
        except ResponseError as error:
            if "NOSESSION" in str(error):
                raise SessionNotFound(session_id, "the session expired") from error
            if "NOTOWNER" in str(error):
                raise LeaseLost(session_id, "another replica processes it") from error
            raise

    async def ping(self) -> None:
        await self._call(self._redis.ping)

    async def create(self, request: SessionRequest) -> tuple[str, str]:
        """Stores a new session; returns its id and its secret token."""
        session_id = secrets.token_hex(12)
        token = secrets.token_urlsafe(32)
        fields: dict[str, Any] = {
            "source": request.source,
            "targets": json.dumps(request.targets),
            "sample_rate": request.sample_rate,
            "token_sha256": _token_digest(token),
            "created_ms": int(time.time() * 1000),
            "next_event": 0,
            "utterances": 0,
            "input_samples": 0,
            "context": "",
        }
        key = self._key(session_id, "session")

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self._ttl_s)
                await pipe.execute()

        await self._call(write)
        return session_id, token

    async def authenticate(self, session_id: str, token: str) -> SessionConfig:
        """Checks the token in constant time and refreshes the session's TTL."""
        fields = await self._call(
            lambda: self._redis.hgetall(self._key(session_id, "session"))
        )
        if b"token_sha256" not in fields:
            raise SessionNotFound(session_id, "no such session, or it expired")

        expected = fields[b"token_sha256"].decode()
        if not hmac.compare_digest(expected, _token_digest(token)):
            raise Unauthorized(session_id, "the token does not open this session")

        await self.touch(session_id)
        return SessionConfig(
            session_id=session_id,
            source=fields[b"source"].decode(),
            targets=json.loads(fields[b"targets"]),
            sample_rate=int(fields[b"sample_rate"]),
        )

    async def touch(self, session_id: str) -> None:
        async def refresh() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in self._keys(session_id):
                    pipe.expire(key, self._ttl_s)
                await pipe.execute()

        await self._call(refresh)

    async def set_sample_rate(self, session_id: str, sample_rate: int) -> None:
        args = [self._ttl_s, "sample_rate", sample_rate]
        await self._script(session_id, self._update, self._keys(session_id), args)

    async def snapshot(self, session_id: str) -> StreamSnapshot:
        """Reads the input side of a session: audio in progress and its context."""

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._key(session_id, "audio"))
                pipe.hmget(
                    self._key(session_id, "session"),
                    ["segmenter", "utterances", "context"],
                )
                pipe.hgetall(self._key(session_id, "utterances"))
                return await pipe.execute()

        audio, (segmenter, utterances, context), unprocessed = await self._call(read)
        return StreamSnapshot(
            pending_audio=audio or b"",
            segmenter_state=segmenter,
            utterances=int(utterances or 0),
            unprocessed={int(n): pcm for n, pcm in unprocessed.items()},
            context=(context or b"").decode(),
        )

    async def write_audio(self, session_id: str, write: AudioWrite) -> list[int]:
        """Applies one chunk's effect atomically; returns new utterance numbers."""
        keys = self._keys(session_id)
        args: list[Any] = [
            write.input_samples,
            write.segmenter_state,
            write.append,
            "1" if write.replace is not None else "0",
            write.replace or b"",
            self._ttl_s,
            *write.ended,
        ]
        numbers = await self._script(session_id, self._audio, keys, args)
        return [int(n) for n in numbers]

    async def complete_utterance(
        self, session_id: str, number: int, context: str, *, owner: str
    ) -> None:
        """Forgets an utterance's audio once all its output is logged."""
        keys = [
            self._key(session_id, "session"),
            self._key(session_id, "utterances"),
            self._key(session_id, "lease"),
        ]
        await self._script(session_id, self._complete, keys, [number, context, owner])

    async def context(self, session_id: str) -> str:
        """Recent transcript of the session, the recognizer's prompt."""
        key = self._key(session_id, "session")
        value = await self._call(lambda: self._redis.hget(key, "context"))
        return (value or b"").decode()

    async def pending_utterances(self, session_id: str) -> list[int]:
        """Numbers of ended utterances whose output is not completely logged."""
        key = self._key(session_id, "utterances")
        numbers = await self._call(lambda: self._redis.hkeys(key))
        return sorted(int(number) for number in numbers)

    async def utterance(self, session_id: str, number: int) -> bytes | None:
        """The stored audio of a pending utterance, or None once completed."""
        key = self._key(session_id, "utterances")
        return await self._call(lambda: self._redis.hget(key, number))

    async def acquire_lease(self, session_id: str, owner: str, ttl_ms: int) -> bool:
        """Takes or renews the session's processing lease for `owner`."""
        keys = [self._key(session_id, "lease")]
        return bool(await self._script(session_id, self._lease, keys, [owner, ttl_ms]))

    async def release_lease(self, session_id: str, owner: str) -> None:
        keys = [self._key(session_id, "lease")]
        await self._script(session_id, self._release, keys, [owner])

    async def emit(
        self,
        session_id: str,
        event: SessionEvent,
        payload: bytes = b"",
        *,
        owner: str | None = None,
    ) -> int:
        """Logs an event and fans it out live; returns its id.

        With `owner`, only while that owner holds the processing lease: a
        replica that lost it cannot write the session's output any more.
        """
        keys = [
            self._key(session_id, "session"),
            self._key(session_id, "events"),
            self._key(session_id, "lease"),
        ]
        args = [
            header_body(event),
            payload,
            self._max_events,
            self.channel(session_id),
            self._ttl_s,
            owner or "",
        ]
        return int(await self._script(session_id, self._emit, keys, args))

    async def events_after(
        self, session_id: str, after: int, count: int = 100
    ) -> list[EventRecord]:
        """Logged events with an id above `after`, oldest first."""
        key = self._key(session_id, "events")
        entries = await self._call(
            lambda: self._redis.xrange(key, min=f"{after + 1}-0", max="+", count=count)
        )
        return [EventRecord.from_stream(fields) for _, fields in entries]

    async def last_event_id(self, session_id: str) -> int:
        key = self._key(session_id, "session")
        value = await self._call(lambda: self._redis.hget(key, "next_event"))
        return int(value or 0)
