"""Python client of the session protocol, used by `tolk translate` and the tests."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

logger = logging.getLogger("tolk.client")

# Refusals that a later attempt may not get: the store or replica is down.
_RETRYABLE_CODES = frozenset({"store_unavailable", "internal_error", None})
# Close codes after which reconnecting cannot help.
_FATAL_CLOSE_CODES = frozenset({1007, 1008, 1009, 4400, 4401, 4404, 4410})


class TolkClientError(Exception):
    """The service refused a request or broke the protocol."""

    def __init__(
        self, message: str, *, code: str | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code

    @property
    def retryable(self) -> bool:
        """Whether a later attempt may succeed: the store or a replica was down."""
        if self.close_code is not None:
            return self.close_code not in _FATAL_CLOSE_CODES
        return self.code in _RETRYABLE_CODES


def _closed_error(error: ConnectionClosed) -> TolkClientError:
    code = error.rcvd.code if error.rcvd else 1006
    reason = error.rcvd.reason if error.rcvd else "no close frame"
    return TolkClientError(f"connection closed with {code}: {reason}", close_code=code)


@dataclass(frozen=True)
class SessionHandle:
    session_id: str
    token: str
    websocket_url: str


@dataclass(frozen=True)
class ServerMessage:
    """A message from the server; `audio` holds the binary frame of audio events."""

    type: str
    data: dict[str, Any]
    audio: bytes | None = None

    @property
    def id(self) -> int | None:
        return self.data.get("id")


@dataclass(frozen=True)
class SpokenSegment:
    """One segment of an utterance's translated speech, as mono PCM16."""

    utterance: int
    segment: int
    sample_rate: int
    pcm16: bytes


@dataclass
class SessionOutput:
    """Everything a connection received, grouped per utterance and language."""

    finals: dict[int, str] = field(default_factory=dict)
    # Where each utterance lies in the input: start and end, in milliseconds.
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    translations: dict[str, dict[int, str]] = field(default_factory=dict)
    audio: dict[str, list[SpokenSegment]] = field(default_factory=dict)
    event_ids: list[int] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, message: ServerMessage) -> None:
        if message.id is not None:
            self.event_ids.append(message.id)
        data = message.data
        if message.type == "recovery_impossible":
            self.recoveries.append(data)
        if message.type == "final":
            self.finals[data["utterance"]] = data["text"]
            self.spans[data["utterance"]] = (data["start_ms"], data["end_ms"])
        elif message.type == "translation":
            by_utterance = self.translations.setdefault(data["language"], {})
            by_utterance[data["utterance"]] = data["text"]
        elif message.type == "audio" and message.audio is not None:
            segment = SpokenSegment(
                data["utterance"], data["segment"], data["sample_rate"], message.audio
            )
            self.audio.setdefault(data["language"], []).append(segment)

    @property
    def text(self) -> str:
        return " ".join(self.finals[n] for n in sorted(self.finals) if self.finals[n])

    def speech(self, language: str) -> dict[int, tuple[int, bytes]]:
        """Each utterance's speech in `language`: its segments joined, with the rate."""
        joined: dict[int, tuple[int, bytes]] = {}
        ordered = sorted(self.audio.get(language, []), key=_segment_order)
        for part in ordered:
            rate, pcm16 = joined.get(part.utterance, (part.sample_rate, b""))
            joined[part.utterance] = (rate, pcm16 + part.pcm16)
        return joined

    def segments(self, language: str) -> dict[int, list[int]]:
        """The segment numbers received for each utterance, in arrival order."""
        numbers: dict[int, list[int]] = {}
        for part in self.audio.get(language, []):
            numbers.setdefault(part.utterance, []).append(part.segment)
        return numbers


def _segment_order(part: SpokenSegment) -> tuple[int, int]:
    return part.utterance, part.segment


class TolkClient:
    """Creates sessions over HTTP and opens their WebSockets."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        """`api_key` creates sessions; unset, it is read from TOLK_API_KEY."""
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or os.environ.get("TOLK_API_KEY")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    async def __aenter__(self) -> TolkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def languages(self) -> dict[str, Any]:
        response = await self._http.get("/v1/languages")
        _raise_for(response)
        return dict(response.json())

    async def deployments(self) -> dict[str, Any]:
        """The service's deployments with their replicas by state."""
        return await self._get("/v1/deployments", "deployments")

    async def usage(self) -> dict[str, dict[str, float]]:
        """CPU seconds of each stage replica since it started, by stage."""
        return await self._get("/v1/usage", "stages")

    async def _get(self, path: str, key: str) -> dict[str, Any]:
        response = await self._http.get(path)
        _raise_for(response)
        return dict(response.json()[key])

    async def create_session(
        self, source: str, targets: list[str], sample_rate: int
    ) -> SessionHandle:
        body = {"source": source, "targets": targets, "sample_rate": sample_rate}
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        response = await self._http.post("/v1/sessions", json=body, headers=headers)
        _raise_for(response)
        created = response.json()
        return self._handle(created["session_id"], created)

    async def add_listener(self, session: SessionHandle) -> SessionHandle:
        """A listen-only handle of the session: it receives, and sends nothing."""
        response = await self._http.post(
            f"/v1/sessions/{session.session_id}/listeners",
            headers={"Authorization": f"Bearer {session.token}"},
        )
        _raise_for(response)
        return self._handle(session.session_id, response.json())

    def _handle(self, session_id: str, created: dict[str, Any]) -> SessionHandle:
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        host = self.base_url.split("://", 1)[1]
        return SessionHandle(
            session_id=session_id,
            token=created["token"],
            websocket_url=f"{scheme}://{host}{created['websocket_path']}",
        )

    async def close_session(self, session: SessionHandle) -> None:
        """Ends the session for every connection and deletes its state."""
        response = await self._http.delete(
            f"/v1/sessions/{session.session_id}",
            headers={"Authorization": f"Bearer {session.token}"},
        )
        _raise_for(response)

    def connect(self, session: SessionHandle, *, last_event_id: int = 0) -> Connection:
        """One plain WebSocket: no reconnection; for tools and protocol tests."""
        return Connection(session, last_event_id=last_event_id)

    def stream(self, session: SessionHandle, **options: Any) -> SessionStream:
        """A connection that survives drops; see `SessionStream`."""
        return SessionStream(session, **options)


class Connection:
    """One WebSocket of a session; use as `async with client.connect(...)`."""

    def __init__(
        self,
        session: SessionHandle,
        *,
        last_event_id: int = 0,
        epoch: str | None = None,
    ) -> None:
        self.session = session
        self.last_event_id = last_event_id
        self.epoch = epoch
        self.ready: dict[str, Any] = {}
        self._socket: ClientConnection | None = None

    async def __aenter__(self) -> Connection:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Connects and says hello; raises `TolkClientError` if refused."""
        # Deflating PCM saves little and costs both ends ~30 ms per MB: without
        # it, a resume that replays minutes of speech is several times faster.
        self._socket = await websockets.connect(
            self.session.websocket_url, max_size=64 * 1024 * 1024, compression=None
        )
        hello: dict[str, Any] = {
            "type": "hello",
            "token": self.session.token,
            "last_event_id": self.last_event_id,
        }
        if self.epoch is not None:
            hello["epoch"] = self.epoch
        await self._socket.send(json.dumps(hello))
        try:
            first = json.loads(await self._socket.recv())
        except ConnectionClosed as error:
            raise _closed_error(error) from error
        if first.get("type") != "ready":
            await self._socket.close()
            raise TolkClientError(
                f"{first.get('code')}: {first.get('message')}",
                code=first.get("code"),
            )
        self.ready = first
        self.epoch = first["epoch"]

    @property
    def replica(self) -> str:
        return str(self.ready.get("replica", ""))

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()

    def abort(self) -> None:
        """Drops the TCP connection without a closing handshake, like a lost network."""
        if self._socket is not None:
            self._socket.transport.abort()

    async def send_audio(self, pcm16: bytes) -> None:
        await self._require().send(pcm16)

    async def configure(self, *, sample_rate: int) -> None:
        message = {"type": "config", "sample_rate": sample_rate}
        await self._require().send(json.dumps(message))

    async def end(self) -> None:
        await self._require().send(json.dumps({"type": "end"}))

    async def add_target(self, language: str) -> None:
        """Asks the session to translate into `language` too; listeners may."""
        message = {"type": "add_target", "language": language}
        await self._require().send(json.dumps(message))

    async def messages(self) -> AsyncIterator[ServerMessage]:
        """Server messages in order; an audio event comes with its binary frame."""
        socket = self._require()
        async for frame in socket:
            if isinstance(frame, bytes):
                raise TolkClientError("binary frame without an audio event")
            data = json.loads(frame)
            audio = None
            if data.get("type") == "audio":
                payload = await socket.recv()
                if not isinstance(payload, bytes):
                    raise TolkClientError("audio event without its binary frame")
                audio = payload
            if isinstance(data.get("id"), int):
                self.last_event_id = data["id"]
            elif data.get("type") == "recovery_impossible":
                self.last_event_id = data["last_event_id"]
                self.epoch = data["epoch"]
            yield ServerMessage(type=data.get("type", ""), data=data, audio=audio)

    def _require(self) -> ClientConnection:
        if self._socket is None:
            raise TolkClientError("the connection is not open")
        return self._socket


@dataclass
class _Pending:
    """Input the service has not acknowledged yet, kept for resending."""

    kind: Literal["audio", "config", "end"]
    position: int
    data: bytes = b""
    sample_rate: int = 0
    announced: bool = False

    @property
    def end_position(self) -> int:
        return self.position + len(self.data) // 2

    def done(self, acked: int) -> bool:
        if self.kind == "audio":
            return self.end_position <= acked
        if self.kind == "config":
            return self.position < acked
        return self.announced


class SessionStream:
    """A session's connection that survives network drops and replica deaths.

    It reconnects by itself, with exponential backoff and jitter, on any
    replica. The service tells it how much audio it has stored; it resends
    what follows, so every sample counts once. It resumes output from the last
    event it has, so `messages()` yields every event once and in order; when
    the service no longer has the events in between, `messages()` yields a
    `recovery_impossible` message and goes on from the current event.
    """

    def __init__(
        self,
        session: SessionHandle,
        *,
        last_event_id: int = 0,
        epoch: str | None = None,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        give_up_after_s: float = 120.0,
        max_unacked_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.session = session
        self.last_event_id = last_event_id
        self.epoch = epoch
        self.replicas: list[str] = []
        # When the service said its store was unreachable.
        self.outages: list[float] = []
        # Per reconnection: events missed, and seconds from the start of the
        # attempt until the last of them arrived.
        self.resumes: list[tuple[int, float]] = []
        self._resuming: tuple[int, int, float] | None = None
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._give_up_after_s = give_up_after_s
        self._max_unacked_bytes = max_unacked_bytes
        # Input not yet done with, oldest first; item k of all ever queued is
        # at index k - self._dropped.
        self._pending: deque[_Pending] = deque()
        self._dropped = 0
        self._unacked_bytes = 0
        self._position = 0
        self._acked = 0
        self._outbox = asyncio.Event()
        self._inbox: asyncio.Queue[ServerMessage | BaseException | None] = (
            asyncio.Queue()
        )
        self._connection: Connection | None = None
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._away_until = 0.0

    async def __aenter__(self) -> SessionStream:
        self._runner = asyncio.create_task(self._run(), name="tolk-stream")
        connected = asyncio.create_task(self._connected.wait())
        await asyncio.wait(
            [connected, self._runner], return_when=asyncio.FIRST_COMPLETED
        )
        connected.cancel()
        if self._runner.done():
            self._runner.result()
            raise TolkClientError("the stream ended before it connected")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def reconnects(self) -> int:
        return max(0, len(self.replicas) - 1)

    @property
    def replica(self) -> str:
        return self.replicas[-1] if self.replicas else ""

    @property
    def acked_samples(self) -> int:
        return self._acked

    async def close(self) -> None:
        self._closing = True
        if self._connection is not None:
            await self._connection.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    def drop(self, away_s: float = 0.0) -> None:
        """Cuts the current connection as a network failure would; it comes back.

        It stays away at least `away_s` seconds, as a phone changing networks
        would, while the session goes on without it.
        """
        self._away_until = time.monotonic() + away_s
        if self._connection is not None:
            self._connection.abort()

    async def send_audio(self, pcm16: bytes) -> None:
        """Queues PCM16 audio; it is sent, and resent after drops, until stored."""
        if self._unacked_bytes + len(pcm16) > self._max_unacked_bytes:
            raise TolkClientError("too much audio waits for the service to store it")
        self._unacked_bytes += len(pcm16)
        self._queue(_Pending("audio", self._position, pcm16))
        self._position += len(pcm16) // 2

    async def configure(self, *, sample_rate: int) -> None:
        self._queue(_Pending("config", self._position, sample_rate=sample_rate))

    async def end(self) -> None:
        """No more audio for now; `end_of_stream` arrives once it is all output."""
        self._queue(_Pending("end", self._position))

    async def messages(self) -> AsyncIterator[ServerMessage]:
        """Events once each, in order, across reconnections; ends when closed."""
        while True:
            item = await self._inbox.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _queue(self, item: _Pending) -> None:
        self._pending.append(item)
        self._outbox.set()

    async def _run(self) -> None:
        failures = 0
        down_since = time.monotonic()
        try:
            while not self._closing:
                connection = Connection(
                    self.session, last_event_id=self.last_event_id, epoch=self.epoch
                )
                attempt = time.monotonic()
                try:
                    await connection.open()
                except TolkClientError as error:
                    if not error.retryable:
                        raise
                    self._note_outage(error.code)
                    logger.info("refused for now (%s); retrying", error.code)
                except (OSError, WebSocketException, TimeoutError) as error:
                    logger.info("cannot connect (%s); retrying", error)
                else:
                    failures = 0
                    finished = await self._serve(connection, attempt)
                    if finished:
                        return
                    await asyncio.sleep(max(0.0, self._away_until - time.monotonic()))
                    down_since = time.monotonic()
                if time.monotonic() - down_since > self._give_up_after_s:
                    raise TolkClientError(
                        f"no connection for {self._give_up_after_s:g} s; giving up"
                    )
                ceiling = min(self._max_backoff_s, self._backoff_s * 2**failures)
                failures += 1
                # Full jitter: clients that lost the same replica do not all
                # come back at the same instant.
                await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError):
                self._inbox.put_nowait(error)
            raise
        finally:
            self._inbox.put_nowait(None)

    async def _serve(self, connection: Connection, attempt: float) -> bool:
        """Runs one connection; True when the stream is over for good."""
        self._connection = connection
        ready = connection.ready
        if self.replicas:
            missed = int(ready["last_event_id"]) - self.last_event_id
            self._resuming = (max(0, missed), int(ready["last_event_id"]), attempt)
            self._note_resumed(self.last_event_id)
        self.replicas.append(connection.replica)
        self.epoch = connection.epoch
        stored = int(ready["input_samples"])
        if stored < self._acked:
            raise TolkClientError(
                f"the service lost stored audio: it has {stored} samples, "
                f"it had acknowledged {self._acked}"
            )
        self._acknowledge(stored)
        self._connected.set()

        sender = asyncio.create_task(self._send(connection, stored))
        try:
            return await self._receive(connection)
        except ConnectionClosed as error:
            code = error.rcvd.code if error.rcvd else 1006
            if code in _FATAL_CLOSE_CODES:
                raise _closed_error(error) from error
            logger.info("connection lost (close code %d); resuming", code)
            return False
        except (OSError, WebSocketException) as error:
            logger.info("connection lost (%s); resuming", error)
            return False
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self._connection = None
            await connection.close()

    async def _receive(self, connection: Connection) -> bool:
        async for message in connection.messages():
            if message.type == "ack":
                self._acknowledge(int(message.data["input_samples"]))
                continue
            if message.type == "error":
                self._note_outage(message.data.get("code"))
            if message.id is not None and message.id <= self.last_event_id:
                continue
            if message.id is not None:
                self.last_event_id = message.id
                self._note_resumed(message.id)
            elif message.type == "recovery_impossible":
                self.last_event_id = int(message.data["last_event_id"])
                self.epoch = str(message.data["epoch"])
            if message.type == "end_of_stream":
                self._forget_end()
            self._inbox.put_nowait(message)
            if message.type == "session_closed":
                return True
        return self._closing

    async def _send(self, connection: Connection, start: int) -> None:
        """Sends the input from sample `start` on, then what is queued later.

        The service expects the first frame at `start` exactly: a frame that it
        stored in part is cut there.
        """
        next_item = self._dropped
        while True:
            self._outbox.clear()
            while next_item < self._dropped + len(self._pending):
                next_item = max(next_item, self._dropped)
                item = self._pending[next_item - self._dropped]
                next_item += 1
                if item.kind == "audio" and item.end_position > start:
                    skip = max(0, start - item.position)
                    await connection.send_audio(item.data[skip * 2 :])
                elif item.kind == "config" and item.position >= start:
                    await connection.configure(sample_rate=item.sample_rate)
                elif item.kind == "end" and not item.announced:
                    await connection.end()
            await self._outbox.wait()

    def _note_resumed(self, event_id: int) -> None:
        if self._resuming is not None and event_id >= self._resuming[1]:
            missed, _, attempt = self._resuming
            self.resumes.append((missed, time.monotonic() - attempt))
            self._resuming = None

    def _note_outage(self, code: str | None) -> None:
        if code == "store_unavailable":
            self.outages.append(time.time())

    def _acknowledge(self, stored: int) -> None:
        """Forgets input up to `stored`; an `end` waits for its announcement."""
        self._acked = max(self._acked, stored)
        while self._pending and self._pending[0].done(self._acked):
            item = self._pending.popleft()
            self._unacked_bytes -= len(item.data)
            self._dropped += 1

    def _forget_end(self) -> None:
        for item in self._pending:
            if item.kind == "end" and not item.announced:
                item.announced = True
                break
        self._acknowledge(self._acked)


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise TolkClientError(f"HTTP {response.status_code}: {detail}")


__all__ = [
    "Connection",
    "ServerMessage",
    "SessionHandle",
    "SessionOutput",
    "SessionStream",
    "SpokenSegment",
    "TolkClient",
    "TolkClientError",
]
