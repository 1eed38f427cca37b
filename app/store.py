"""The session store: every session's state, in Redis, behind domain verbs.

Keys of one session share a hash tag so that scripts may touch them together
on a Redis Cluster:

    tolk:{SID}:session      hash: configuration, counters, input and recognizer
                            state, the log's epoch
    tolk:{SID}:audio        string: PCM16 16 kHz of the utterance in progress
    tolk:{SID}:jobs         hash: work not yet fully output, by sequence number
                            (ended utterances, and `end` requests)
    tolk:{SID}:steps        hash: output already logged for a job, step -> id
    tolk:{SID}:events       stream: output events, entry id "<event id>-0"
    tolk:{SID}:lease        string: the fencing token of the processing lease
    tolk:{SID}:closed       string: left behind for a while by an explicit close
    tolk:{SID}:live         Pub/Sub channel: the same events, live

and, for each API key, `tolk:apikey:{KEY}:sessions`, the set of the sessions
it created that may still exist, bounded by the key's session limit.

Every write refreshes the TTL of all of them. Every change that touches more
than one field or key is one Lua script, so concurrent replicas never lose a
write.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.access import digest
from app.errors import (
    InputMoved,
    InputThrottled,
    LeaseLost,
    SessionEnded,
    SessionNotFound,
    StoreUnavailable,
    TooManySessions,
    Unauthorized,
)
from app.protocol import SessionEvent, SessionRequest
from app.segmenter import EndedUtterance
from app.wire import CLOSED_NOTICE, EventRecord, header_body

T = TypeVar("T")

_UNAVAILABLE_REPLIES = {"OOM", "READONLY", "BUSY", "LOADING", "MASTERDOWN"}

_SESSION_KEYS = (
    "session",
    "audio",
    "jobs",
    "steps",
    "events",
    "listeners",
    "connections",
)

# Puts the id at the front of the header, logs the event and publishes it, in
# one step, so that log order, id order and publish order are the same. A
# `step` names the output once: a second emit of it returns the first id.
# The log keeps at most ARGV[3] events and ARGV[9] bytes (`log_bytes` counts
# them), dropping the oldest; the newest event is always kept.
_EMIT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
if ARGV[6] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[6] then
  return redis.error_reply('NOTOWNER')
end
if ARGV[7] ~= '' then
  local logged = redis.call('HGET', KEYS[4], ARGV[7])
  if logged then return tonumber(logged) end
end
if ARGV[8] ~= '' and
   tonumber(redis.call('HGET', KEYS[1], 'utterances') or '0') >= tonumber(ARGV[8])
then
  return 0
end
local id = redis.call('HINCRBY', KEYS[1], 'next_event', 1)
local header = '{"id":' .. id .. ',' .. string.sub(ARGV[1], 2)
-- A log that Redis lost, or one written before it was counted, is counted
-- anew: the count must never drift from what the log holds.
local count = redis.call('XLEN', KEYS[2])
if count == 0 or not redis.call('HGET', KEYS[1], 'log_bytes') then
  local size = 0
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
    for i = 2, #entry[2], 2 do size = size + #entry[2][i] end
  end
  redis.call('HSET', KEYS[1], 'log_bytes', size)
end
redis.call('XADD', KEYS[2], id .. '-0', 'h', header, 'b', ARGV[2])
local total = redis.call('HINCRBY', KEYS[1], 'log_bytes', #header + #ARGV[2])
count = count + 1
while count > 1 and (count > tonumber(ARGV[3]) or total > tonumber(ARGV[9])) do
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  local size = 0
  for i = 2, #oldest[2], 2 do size = size + #oldest[2][i] end
  redis.call('XDEL', KEYS[2], oldest[1])
  total = redis.call('HINCRBY', KEYS[1], 'log_bytes', -size)
  count = count - 1
end
redis.call('PUBLISH', ARGV[4], header .. '\\n' .. ARGV[2])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[4], ARGV[7], id) end
for i = 1, #KEYS do
  if i ~= 3 then redis.call('EXPIRE', KEYS[i], ARGV[5]) end
end
return id
"""

# Applies the effect of one received chunk of audio (or of a `config` or an
# `end`), if the input is still as the writer last saw it: every write bumps
# the input's version. Ended utterances and `end` requests become jobs, in
# order. Audio (ARGV[11] seconds of it) is refused while ARGV[14] jobs wait
# (BACKLOG), or while the session is ahead of its pace (PACE and the seconds
# to wait): a token bucket refilled at ARGV[12] seconds of audio per second
# up to ARGV[13]. One chunk may overdraw it; the reply says how long the
# writer should then wait before reading more, and how many jobs wait.
_INPUT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
local state = redis.call('HMGET', KEYS[1], 'input_version', 'input_samples')
if tonumber(state[1] or '0') ~= tonumber(ARGV[1]) then
  return redis.error_reply('STALE ' .. (state[2] or '0'))
end
local wait = 0
local seconds = tonumber(ARGV[11])
if seconds > 0 then
  local most = tonumber(ARGV[14])
  if most > 0 and redis.call('HLEN', KEYS[3]) >= most then
    return redis.error_reply('BACKLOG')
  end
  local speed, burst = tonumber(ARGV[12]), tonumber(ARGV[13])
  if speed > 0 then
    local clock = redis.call('TIME')
    local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
    local pace = redis.call('HMGET', KEYS[1], 'pace_credit', 'pace_at')
    local credit = tonumber(pace[1] or burst)
    local since = math.max(0, now - tonumber(pace[2] or now))
    credit = math.min(burst, credit + since * speed)
    if credit < 0 then return redis.error_reply('PACE ' .. (-credit / speed)) end
    credit = credit - seconds
    redis.call('HSET', KEYS[1], 'pace_credit', tostring(credit), 'pace_at',
               tostring(now))
    if credit < 0 then wait = -credit / speed end
  end
end
local result = {}
for i = 15, #ARGV do
  local n = redis.call('HINCRBY', KEYS[1], 'utterances', 1)
  local seq = redis.call('HINCRBY', KEYS[1], 'job_seq', 1)
  redis.call('HSET', KEYS[3], seq, 'U:' .. n .. ':' .. ARGV[i])
  result[#result + 1] = n
end
if ARGV[6] == '1' then redis.call('SET', KEYS[2], ARGV[7]) end
if #ARGV[5] > 0 then redis.call('APPEND', KEYS[2], ARGV[5]) end
local position = redis.call('HINCRBY', KEYS[1], 'input_samples', ARGV[2])
local version = redis.call('HINCRBY', KEYS[1], 'input_version', 1)
redis.call('HSET', KEYS[1], 'segmenter', ARGV[3], 'resampler', ARGV[4])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'sample_rate', ARGV[10]) end
if ARGV[9] == '1' and redis.call('HGET', KEYS[1], 'last_end_at') ~= tostring(position)
then
  local seq = redis.call('HINCRBY', KEYS[1], 'job_seq', 1)
  local count = redis.call('HGET', KEYS[1], 'utterances') or '0'
  redis.call('HSET', KEYS[3], seq, 'E:' .. count)
  redis.call('HSET', KEYS[1], 'last_end_at', position)
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
table.insert(result, 1, tostring(wait))
table.insert(result, 1, redis.call('HLEN', KEYS[3]))
table.insert(result, 1, version)
table.insert(result, 1, position)
return result
"""

# CPU readings of the stage replicas (see app.usage); not session state.
_USAGE_KEY = "tolk:usage"
_USAGE_TTL_S = 86_400

# Forgets a job once all its output is logged; only the lease holder may.
_COMPLETE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return redis.error_reply('NOTOWNER') end
redis.call('HDEL', KEYS[2], ARGV[1])
local prefix = 'j' .. ARGV[1] .. ':'
for _, step in ipairs(redis.call('HKEYS', KEYS[4])) do
  if string.sub(step, 1, #prefix) == prefix then redis.call('HDEL', KEYS[4], step) end
end
redis.call('HSET', KEYS[1], 'context', ARGV[2])
return 1
"""

# The first pending job after ARGV[1], what of its output is logged, and the
# session's context, in one round trip: a job's audio is read once, and only
# the job that is taken.
_NEXT_JOB_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
local after = tonumber(ARGV[1])
local next_seq = nil
local pending = 0
for _, seq in ipairs(redis.call('HKEYS', KEYS[2])) do
  local number = tonumber(seq)
  pending = pending + 1
  if number > after and (next_seq == nil or number < next_seq) then
    next_seq = number
  end
end
local context = redis.call('HGET', KEYS[1], 'context') or ''
local targets = redis.call('HGET', KEYS[1], 'targets')
if next_seq == nil then return {pending, context, targets} end
local steps = {}
local prefix = 'j' .. next_seq .. ':'
local logged = redis.call('HGETALL', KEYS[3])
for i = 1, #logged, 2 do
  if string.sub(logged[i], 1, #prefix) == prefix then
    table.insert(steps, string.sub(logged[i], #prefix + 1))
    table.insert(steps, logged[i + 1])
  end
end
local job = redis.call('HGET', KEYS[2], next_seq)
return {pending, context, targets, next_seq, job, steps}
"""

# The processing lease. A new holder gets a fresh token from a counter, so
# tokens never repeat; renewing needs the token still in place.
_ACQUIRE_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOSESSION') end
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if ARGV[3] == '1' and redis.call('HLEN', KEYS[3]) == 0 then return false end
local token = redis.call('HINCRBY', KEYS[2], 'lease_seq', 1) .. '-' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
"""

_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Decides whether a client's resume point can be served from the log. The
# epoch changes when the log has lost events that it should hold, so that
# clients of the old epoch learn it; `log_base` is the newest id when the
# current epoch began. Ids up to it mean the same events in both epochs, so a
# client of the previous epoch that had seen no more than that resumes
# exactly: one client's claim to have seen lost events does not cost the
# others their catch-up.
# Only a speaker's claim (ARGV[4]) starts a new epoch: listener tokens are
# shared widely, and a listener's false claim must not move the others on.
# Limitation: a speaker who claims an event id beyond the newest twice in a
# row pushes the epoch before them out, and clients still on it get
# history_lost.
_RESUME_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
local fields = redis.call('HMGET', KEYS[1],
  'epoch', 'next_event', 'input_samples', 'log_base', 'previous_epoch')
local epoch = fields[1]
local newest = tonumber(fields[2] or '0')
local samples = fields[3] or '0'
local base = tonumber(fields[4] or '0')
local after = tonumber(ARGV[2])
local function id_of(entries)
  if #entries == 0 then return nil end
  return tonumber(string.match(entries[1][1], '^(%d+)'))
end
local function new_epoch()
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'log_base', newest,
             'previous_epoch', epoch or '')
  epoch = ARGV[3]
  return {epoch, newest, samples, 'history_lost'}
end
if not epoch then return new_epoch() end
if ARGV[1] ~= '' and ARGV[1] ~= epoch then
  if ARGV[1] ~= fields[5] or after > base then
    return {epoch, newest, samples, 'history_lost'}
  end
end
local last = id_of(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1))
if newest > base and (last == nil or last < newest) then return new_epoch() end
if after > newest then
  -- Only a client that knows the epoch can prove that events were lost.
  if ARGV[1] ~= epoch or ARGV[4] ~= '1' then
    return {epoch, newest, samples, 'history_lost'}
  end
  return new_epoch()
end
if after < newest then
  local first = id_of(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1))
  if first == nil or first > after + 1 then
    return {epoch, newest, samples, 'trimmed'}
  end
end
return {epoch, newest, samples, 'ok'}
"""


# Ends a session for good: keys go, connections hear it, a marker stays so
# that late connections learn why.
# A listener's token is only ever added to a session that still exists, and
# expires with it.
_ADD_LISTENER_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], '1')
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# Open connections by the time they last said they were alive, in Redis' clock
# so that replicas' clocks do not matter.
# Appends a target language to the session's list unless it is there or the
# list is full: 1 added, 0 already there, -1 full.
_ADD_TARGET_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], 'targets')
if not raw then return redis.error_reply('NOSESSION') end
local targets = cjson.decode(raw)
for _, language in ipairs(targets) do
  if language == ARGV[1] then return 0 end
end
if #targets >= tonumber(ARGV[2]) then return -1 end
table.insert(targets, ARGV[1])
redis.call('HSET', KEYS[1], 'targets', cjson.encode(targets))
return 1
"""

# Admits a session to its API key's set unless `limit` are in it already
# (1 admitted, 0 refused). Members whose session is gone are pruned by the
# caller first, so a session in use needs no renewal to keep counting.
_ADMIT_SCRIPT = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

_JOIN_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

_CLOSE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', unpack(KEYS, 1, #KEYS - 1))
redis.call('SET', KEYS[#KEYS], '1', 'EX', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class SessionConfig:
    session_id: str
    source: str
    targets: list[str]
    sample_rate: int
    # "speaker" sends audio; a "listener" only receives the session's output.
    role: Literal["speaker", "listener"] = "speaker"
    created_ms: int = 0


@dataclass(frozen=True)
class InputState:
    """Where a session's input stands: what a replica needs to continue it."""

    version: int
    position: int
    sample_rate: int
    resampler_state: bytes | None
    segmenter_state: bytes | None
    pending_audio: bytes
    utterances: int


@dataclass(frozen=True)
class InputWrite:
    """The effect of one received chunk, applied only at `expected_version`."""

    expected_version: int
    samples: int
    segmenter_state: bytes
    resampler_state: bytes
    append: bytes = b""
    replace: bytes | None = None
    ended: tuple[bytes, ...] = ()
    end: bool = False
    sample_rate: int | None = None
    # Seconds of audio the chunk holds, counted against the session's pace.
    seconds: float = 0.0


@dataclass(frozen=True)
class InputWritten:
    """What a write left: the stored position and what the writer should heed.

    `pending_jobs` counts the session's utterances and `end`s waiting to be
    output, `backlogged` says that they are as many as the store takes audio
    for; `pace_wait_s` is how far the session's audio is ahead of its pace.
    """

    position: int
    version: int
    utterances: list[int]
    pending_jobs: int = 0
    backlogged: bool = False
    pace_wait_s: float = 0.0


@dataclass(frozen=True)
class AudioPace:
    """How fast a session's audio may arrive: `speed` times real time, after
    a burst of `burst_s` seconds."""

    speed: float
    burst_s: float


@dataclass(frozen=True)
class UtteranceJob:
    seq: int
    number: int
    utterance: EndedUtterance


@dataclass(frozen=True)
class EndJob:
    """The client's `end`: announce once everything before it is output."""

    seq: int
    utterances: int


Job = UtteranceJob | EndJob


@dataclass(frozen=True)
class NextJob:
    """A job to take, if any, with the output of it already logged.

    `pending` counts all the session's pending jobs, those taken before
    included; `context` is the session's stored context and `targets` its
    target languages now.
    """

    pending: int
    context: str
    targets: list[str]
    job: Job | None = None
    steps: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Resume:
    """Where a connection starts: the log's epoch and newest id, the input."""

    epoch: str
    last_event_id: int
    input_samples: int
    status: Literal["ok", "trimmed", "history_lost"]


def _parse_job(seq: int, data: bytes) -> Job:
    kind, _, rest = data.partition(b":")
    if kind == b"E":
        return EndJob(seq=seq, utterances=int(rest))
    number, _, utterance = rest.partition(b":")
    return UtteranceJob(
        seq=seq, number=int(number), utterance=EndedUtterance.from_bytes(utterance)
    )


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise StoreUnavailable(str(error)) from error
    except ResponseError as error:
        # Redis answers but cannot serve: out of memory, a replica that
        # became read-only after a failover, a script running too long.
        if str(error).split(" ", 1)[0] in _UNAVAILABLE_REPLIES:
            raise StoreUnavailable(str(error)) from error
        raise


class SessionStore:
    """Owns key names, TTLs and the scripts; speaks sessions, not Redis."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: int,
        max_events: int,
        max_connections: int = 32,
        max_log_bytes: int = 16 << 20,
        pace: AudioPace | None = None,
        max_pending_jobs: int = 0,
    ) -> None:
        # Bounded: a flood of sockets waits for a connection rather than
        # opening one each, and a replica never holds more than this many.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=15,
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._ttl_s = ttl_s
        self._max_events = max_events
        self._max_log_bytes = max_log_bytes
        self._pace = pace
        self._max_pending_jobs = max_pending_jobs
        self._emit = self._redis.register_script(_EMIT_SCRIPT)
        self._add_target = self._redis.register_script(_ADD_TARGET_SCRIPT)
        self._admit = self._redis.register_script(_ADMIT_SCRIPT)
        self._input = self._redis.register_script(_INPUT_SCRIPT)
        self._complete = self._redis.register_script(_COMPLETE_SCRIPT)
        self._acquire = self._redis.register_script(_ACQUIRE_SCRIPT)
        self._next_job = self._redis.register_script(_NEXT_JOB_SCRIPT)
        self._renew = self._redis.register_script(_RENEW_SCRIPT)
        self._release = self._redis.register_script(_RELEASE_SCRIPT)
        self._resume = self._redis.register_script(_RESUME_SCRIPT)
        self._close = self._redis.register_script(_CLOSE_SCRIPT)
        self._add_listener = self._redis.register_script(_ADD_LISTENER_SCRIPT)
        self._join = self._redis.register_script(_JOIN_SCRIPT)

    @property
    def client(self) -> redis.Redis:
        return self._redis

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    async def aclose(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def channel(session_id: str) -> str:
        return f"tolk:{{{session_id}}}:live"

    @staticmethod
    def _key(session_id: str, name: str) -> str:
        return f"tolk:{{{session_id}}}:{name}"

    def _keys(self, session_id: str, *names: str) -> list[str]:
        return [self._key(session_id, name) for name in names or _SESSION_KEYS]

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        async with translated_errors():
            return await operation()

    async def _script(
        self, session_id: str, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await self._call(lambda: script(keys=keys, args=args))
        except ResponseError as error:
            text = str(error)
            if "NOSESSION" in text:
                raise SessionNotFound(session_id, "the session expired") from error
            if "NOTOWNER" in text:
                raise LeaseLost(session_id, "another replica processes it") from error
            if text.startswith("STALE "):
                raise InputMoved(session_id, int(text.split()[1])) from error
            if text.startswith("PACE "):
                raise InputThrottled(session_id, float(text.split()[1])) from error
            if text.startswith("BACKLOG"):
                raise InputThrottled(session_id, None) from error
            raise

    async def ping(self) -> None:
        await self._call(self._redis.ping)

    @staticmethod
    def _key_sessions(api_key: str) -> str:
        return f"tolk:apikey:{{{api_key}}}:sessions"

    async def create(
        self, request: SessionRequest, api_key: str = "", *, key_limit: int = 0
    ) -> tuple[str, str]:
        """Stores a new session; returns its id and its speaker's secret token.

        `api_key` is the id of the key that created it; with `key_limit`, at
        most that many of its sessions may exist at once (`TooManySessions`):
        a session counts until it is closed or expires.
        """
        session_id = secrets.token_hex(12)
        token = secrets.token_urlsafe(32)
        fields: dict[str, Any] = {
            "source": request.source,
            "targets": json.dumps(request.targets),
            "sample_rate": request.sample_rate,
            "token_sha256": digest(token),
            "api_key": api_key,
            "created_ms": int(time.time() * 1000),
            "epoch": secrets.token_hex(6),
            "next_event": 0,
            "utterances": 0,
            "input_samples": 0,
            "input_version": 0,
            "job_seq": 0,
            "context": "",
        }
        key = self._key(session_id, "session")

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self._ttl_s)
                await pipe.execute()

        await self._call(write)
        if (
            api_key
            and key_limit
            and not await self._admit_to_key(session_id, api_key, key_limit)
        ):
            await self._call(lambda: self._redis.delete(key))
            raise TooManySessions(
                session_id, f"this API key has {key_limit} sessions alive"
            )
        return session_id, token

    async def _admit_to_key(self, session_id: str, api_key: str, limit: int) -> bool:
        # The session exists before it is admitted, so a member whose session
        # is missing has ended or expired, and pruning it is always right.
        members = self._key_sessions(api_key)
        args = [session_id, limit]
        if await self._script(session_id, self._admit, [members], args):
            return True
        ids = [
            m.decode() for m in await self._call(lambda: self._redis.smembers(members))
        ]

        async def gone() -> list[str]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for other in ids:
                    pipe.exists(self._key(other, "session"))
                found = await pipe.execute()
            return [other for other, alive in zip(ids, found, strict=True) if not alive]

        ended = await self._call(gone)
        if not ended:
            return False
        await self._call(lambda: self._redis.srem(members, *ended))
        return bool(await self._script(session_id, self._admit, [members], args))

    async def add_listener(self, session_id: str, limit: int) -> str | None:
        """Issues a listen-only token; None when `limit` were issued already."""
        token = secrets.token_urlsafe(32)
        keys = self._keys(session_id, "session", "listeners")
        args = [digest(token), self._ttl_s, limit]
        added = await self._script(session_id, self._add_listener, keys, args)
        return token if added else None

    async def add_target(
        self, session_id: str, language: str, limit: int
    ) -> Literal["added", "present", "full"]:
        """Adds a target language to the session, at most `limit` in all."""
        keys = self._keys(session_id, "session")
        added = await self._script(
            session_id, self._add_target, keys, [language, limit]
        )
        return "added" if added == 1 else "present" if added == 0 else "full"

    async def authenticate(self, session_id: str, token: str) -> SessionConfig:
        """Checks a speaker or listener token in constant time; refreshes the TTL."""
        session_key, listeners_key = self._keys(session_id, "session", "listeners")

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(
                    session_key,
                    ["token_sha256", "source", "targets", "sample_rate", "created_ms"],
                )
                # A digest of a 256-bit secret: looking it up leaks nothing.
                pipe.hexists(listeners_key, digest(token))
                return list(await pipe.execute())

        fields, listener = await self._call(read)
        expected, source, targets, sample_rate, created_ms = fields
        if expected is None:
            closed = self._key(session_id, "closed")
            if await self._call(lambda: self._redis.exists(closed)):
                raise SessionEnded(session_id, "the session was closed")
            raise SessionNotFound(session_id, "no such session, or it expired")

        speaker = hmac.compare_digest(expected.decode(), digest(token))
        if not (speaker or listener):
            raise Unauthorized(session_id, "the token does not open this session")

        await self.touch(session_id)
        return SessionConfig(
            session_id=session_id,
            source=source.decode(),
            targets=json.loads(targets),
            sample_rate=int(sample_rate),
            role="speaker" if speaker else "listener",
            created_ms=int(created_ms or 0),
        )

    async def join(
        self, session_id: str, connection: str, limit: int, stale_ms: int
    ) -> bool:
        """Counts a connection into its session; False if `limit` are open.

        Each connection renews its entry (`join` again) well within
        `stale_ms`; entries older than that belong to connections that died
        without leaving and no longer count.
        """
        keys = self._keys(session_id, "session", "connections")
        args = [connection, limit, stale_ms, self._ttl_s]
        return bool(await self._script(session_id, self._join, keys, args))

    async def leave(self, session_id: str, connection: str) -> None:
        key = self._key(session_id, "connections")
        await self._call(lambda: self._redis.zrem(key, connection))

    async def touch(self, session_id: str) -> None:
        """Refreshes the TTL of a session's keys; a no-op for missing ones."""

        async def refresh() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in self._keys(session_id):
                    pipe.expire(key, self._ttl_s)
                await pipe.execute()

        await self._call(refresh)

    async def exists(self, session_id: str) -> bool:
        key = self._key(session_id, "session")
        return bool(await self._call(lambda: self._redis.exists(key)))

    async def close(self, session_id: str) -> bool:
        """Deletes a session and tells its connections; False if it was gone."""
        api_key = await self._call(
            lambda: self._redis.hget(self._key(session_id, "session"), "api_key")
        )
        if api_key:
            # It no longer counts against its key.
            sessions = self._key_sessions(api_key.decode())
            await self._call(lambda: self._redis.srem(sessions, session_id))
        keys = [*self._keys(session_id), self._key(session_id, "lease")]
        keys.append(self._key(session_id, "closed"))
        args = [self._ttl_s, self.channel(session_id), CLOSED_NOTICE]
        return bool(await self._script(session_id, self._close, keys, args))

    async def resume(
        self,
        session_id: str,
        epoch: str | None,
        after: int,
        *,
        speaker: bool = True,
    ) -> Resume:
        """Checks that the log still holds every event after `after` in `epoch`.

        A claim to have seen events beyond the newest starts a new epoch
        only when it is a `speaker`'s.
        """
        keys = self._keys(session_id, "session", "events")
        args = [epoch or "", after, secrets.token_hex(6), "1" if speaker else "0"]
        new_epoch, newest, samples, status = await self._script(
            session_id, self._resume, keys, args
        )
        return Resume(
            epoch=new_epoch.decode(),
            last_event_id=int(newest),
            input_samples=int(samples),
            status=status.decode(),
        )

    async def input_state(self, session_id: str) -> InputState:
        """Reads the input side of a session: position, filter states, audio."""

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._key(session_id, "audio"))
                pipe.hmget(
                    self._key(session_id, "session"),
                    [
                        "input_version",
                        "input_samples",
                        "sample_rate",
                        "resampler",
                        "segmenter",
                        "utterances",
                    ],
                )
                return await pipe.execute()

        audio, fields = await self._call(read)
        version, position, sample_rate, resampler, segmenter, utterances = fields
        if sample_rate is None:
            raise SessionNotFound(session_id, "the session expired")
        return InputState(
            version=int(version or 0),
            position=int(position or 0),
            sample_rate=int(sample_rate),
            resampler_state=resampler,
            segmenter_state=segmenter,
            pending_audio=audio or b"",
            utterances=int(utterances or 0),
        )

    async def write_input(self, session_id: str, write: InputWrite) -> InputWritten:
        """Applies one chunk's effect atomically.

        Raises `InputMoved` when the stored version is not the expected one:
        someone else wrote since, and the caller's state is stale; and
        `InputThrottled` for audio the session may not take yet (nothing of
        the chunk is stored, and the caller's state is stale too).
        """
        args: list[Any] = [
            write.expected_version,
            write.samples,
            write.segmenter_state,
            write.resampler_state,
            write.append,
            "1" if write.replace is not None else "0",
            write.replace or b"",
            self._ttl_s,
            "1" if write.end else "0",
            write.sample_rate or "",
            write.seconds,
            self._pace.speed if self._pace else 0,
            self._pace.burst_s if self._pace else 0,
            self._max_pending_jobs,
            *write.ended,
        ]
        keys = self._keys(session_id, "session", "audio", "jobs", "steps", "events")
        result = await self._script(session_id, self._input, keys, args)
        return InputWritten(
            position=int(result[0]),
            version=int(result[1]),
            pending_jobs=int(result[2]),
            backlogged=0 < self._max_pending_jobs <= int(result[2]),
            pace_wait_s=float(result[3]),
            utterances=[int(n) for n in result[4:]],
        )

    async def complete_job(
        self, session_id: str, seq: int, context: str, *, owner: str
    ) -> None:
        """Forgets a job and its steps once all its output is logged."""
        keys = self._keys(session_id, "session", "jobs", "lease", "steps")
        await self._script(session_id, self._complete, keys, [seq, context, owner])

    async def record_usage(self, readings: dict[tuple[str, str], float]) -> None:
        """Keeps each (stage, replica) CPU reading if it is the highest yet."""
        members = {
            f"{stage}/{replica}": cpu_s for (stage, replica), cpu_s in readings.items()
        }

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(_USAGE_KEY, members, gt=True)
                pipe.expire(_USAGE_KEY, _USAGE_TTL_S)
                await pipe.execute()

        await self._call(write)

    async def usage(self) -> dict[str, dict[str, float]]:
        """The highest CPU reading of each stage replica, by stage and replica."""
        entries = await self._call(
            lambda: self._redis.zrange(_USAGE_KEY, 0, -1, withscores=True)
        )
        stages: dict[str, dict[str, float]] = {}
        for member, cpu_s in entries:
            stage, _, replica = member.decode().partition("/")
            stages.setdefault(stage, {})[replica] = float(cpu_s)
        return stages

    async def pending_jobs(self, session_id: str) -> list[int]:
        """Sequence numbers of jobs whose output is not completely logged."""
        key = self._key(session_id, "jobs")
        numbers = await self._call(lambda: self._redis.hkeys(key))
        return sorted(int(number) for number in numbers)

    async def wait_for_backlog(self, session_id: str, *, poll_s: float = 0.25) -> int:
        """Waits until the store takes audio again; returns how many jobs wait.

        Polls: the processor that completes jobs may be on another replica, and
        a paused speaker is rare enough that a channel for it is not worth it.
        """
        while True:
            pending = len(await self.pending_jobs(session_id))
            if pending < self._max_pending_jobs or not self._max_pending_jobs:
                return pending
            await asyncio.sleep(poll_s)

    async def next_job(self, session_id: str, after: int) -> NextJob:
        """The first pending job numbered above `after`, with what it needs."""
        keys = self._keys(session_id, "session", "jobs", "steps")
        reply = await self._script(session_id, self._next_job, keys, [after])
        pending, context, targets = int(reply[0]), reply[1].decode(), reply[2]
        targets = json.loads(targets) if targets else []
        if len(reply) == 3:
            return NextJob(pending=pending, context=context, targets=targets)
        seq, flat = int(reply[3]), reply[5]
        steps = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return NextJob(
            pending=pending,
            context=context,
            targets=targets,
            job=_parse_job(seq, reply[4]),
            steps=steps,
        )

    async def event(self, session_id: str, event_id: int) -> EventRecord | None:
        key = self._key(session_id, "events")
        entry_id = f"{event_id}-0"
        entries = await self._call(
            lambda: self._redis.xrange(key, min=entry_id, max=entry_id)
        )
        return EventRecord.from_stream(entries[0][1]) if entries else None

    async def acquire_lease(
        self, session_id: str, ttl_ms: int, *, for_jobs: bool = False
    ) -> str | None:
        """Takes the session's processing lease if free; returns its token.

        With `for_jobs`, only if jobs are pending: one round trip to look for
        work and claim it.
        """
        keys = self._keys(session_id, "lease", "session", "jobs")
        args = [secrets.token_hex(4), ttl_ms, int(for_jobs)]
        token = await self._script(session_id, self._acquire, keys, args)
        return None if token is None else token.decode()

    async def renew_lease(self, session_id: str, token: str, ttl_ms: int) -> bool:
        keys = self._keys(session_id, "lease")
        return bool(await self._script(session_id, self._renew, keys, [token, ttl_ms]))

    async def release_lease(self, session_id: str, token: str) -> None:
        keys = self._keys(session_id, "lease")
        await self._script(session_id, self._release, keys, [token])

    async def emit(
        self,
        session_id: str,
        event: SessionEvent,
        payload: bytes = b"",
        *,
        owner: str | None = None,
        step: str | None = None,
        while_open: int | None = None,
    ) -> int:
        """Logs an event and fans it out live; returns its id.

        With `owner`, only while that token holds the processing lease: a
        replica that lost it cannot write the session's output any more. With
        `step` (a job's output, e.g. `j3:final`), only once: a repeat returns
        the id logged the first time. With `while_open`, only while utterance
        number `while_open` has not ended; returns 0 when it has.
        """
        keys = self._keys(session_id, "session", "events", "lease", "steps")
        args = [
            header_body(event),
            payload,
            self._max_events,
            self.channel(session_id),
            self._ttl_s,
            owner or "",
            step or "",
            "" if while_open is None else while_open,
            self._max_log_bytes,
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
