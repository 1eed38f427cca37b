"""One WebSocket of one session: authentication, input, and ordered delivery."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from pydantic import ValidationError
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.errors import InputThrottled, ProtocolViolation, SessionError, TolkError
from app.fanout import RESYNC, Fanout, Subscription
from app.intake import Stored
from app.metrics import IngressMetrics
from app.processor import SessionProcessor
from app.protocol import (
    MAX_TARGETS,
    Ack,
    AddTarget,
    CloseCode,
    Configure,
    EndOfStream,
    ErrorMessage,
    Hello,
    Ready,
    RecoveryImpossible,
    SessionClosed,
    TargetAdded,
    client_message_adapter,
)
from app.registry import ProcessorRegistry
from app.settings import IngressSettings
from app.stages import Capabilities
from app.store import Resume, SessionConfig, SessionStore
from app.tasks import cancel_and_wait
from app.wire import EventRecord

logger = logging.getLogger("tolk.connection")

# A connection with no live event for this long checks the log by itself.
_IDLE_CHECK_S = 5.0
# An open connection says it is alive this often; one silent for three times
# as long died without leaving and no longer counts against its session.
_HEARTBEAT_S = 10.0


class ConnectionState(Enum):
    AUTHENTICATING = "authenticating"
    STREAMING = "streaming"
    CLOSED = "closed"


@dataclass(frozen=True)
class IngressContext:
    """What every connection of a replica shares."""

    settings: IngressSettings
    store: SessionStore
    fanout: Fanout
    registry: ProcessorRegistry
    replica: str
    metrics: IngressMetrics
    capabilities: Callable[[], Awaitable[Capabilities]]


class SessionConnection:
    """Serves one socket until the client leaves or breaks the protocol."""

    def __init__(
        self, websocket: WebSocket, session_id: str, context: IngressContext
    ) -> None:
        self._socket = websocket
        self._session_id = session_id
        self._context = context
        self._state = ConnectionState.AUTHENTICATING
        self._send_lock = asyncio.Lock()
        self._exit_stack = AsyncExitStack()
        self._processor: SessionProcessor | None = None
        self._epoch = ""
        # The client's sample number of the next audio frame, and the stored
        # position last acknowledged to it.
        self._input_cursor = 0
        self._acked = 0
        self._id = secrets.token_hex(8)
        # Seconds of audio received, and when, to hold the client to a pace.
        self._audio_s = 0.0
        self._opened = time.monotonic()
        self._sample_rate = 16_000
        # A message received while input waited, to handle once it may go on.
        self._held: Message | None = None

    async def run(self) -> None:
        await self._socket.accept()
        self._context.metrics.connection_opened()
        try:
            config, hello = await self._authenticate()
            async with self._context.fanout.subscribe(self._session_id) as inbox:
                await self._stream(config, hello, inbox)
        except TolkError as error:
            await self._fail(error)
        except WebSocketDisconnect:
            pass
        finally:
            self._state = ConnectionState.CLOSED
            self._context.metrics.connection_closed()
            await self._exit_stack.aclose()
            logger.info(
                "session %s: connection closed on %s",
                self._session_id,
                self._context.replica,
            )

    # Limitation: sockets that have not said hello yet are bounded only by
    # `auth_timeout_s` and the replica's `max_ongoing_requests`; a flood of
    # them from many addresses can take a replica's places for that long.
    async def _authenticate(self) -> tuple[SessionConfig, Hello]:
        timeout = self._context.settings.auth_timeout_s
        try:
            text = await asyncio.wait_for(self._socket.receive_text(), timeout)
        except TimeoutError as error:
            raise self._violation(
                f"no hello within {timeout:g} s",
                code="auth_timeout",
                close_code=CloseCode.AUTH_TIMEOUT,
            ) from error
        except KeyError as error:
            # receive_text() found a binary frame where the hello belongs.
            raise self._violation("the first message must be a hello") from error

        try:
            hello = client_message_adapter.validate_json(text)
        except ValidationError as error:
            raise self._violation("the first message must be a valid hello") from error
        if not isinstance(hello, Hello):
            raise self._violation("the first message must be a hello")

        config = await self._context.store.authenticate(self._session_id, hello.token)
        if self._age_s(config) >= self._context.settings.max_session_s:
            raise self._too_long()
        return config, hello

    def _age_s(self, config: SessionConfig) -> float:
        # Sessions stored before creation times were kept count from now.
        if not config.created_ms:
            return 0.0
        return time.time() - config.created_ms / 1000

    def _too_long(self) -> ProtocolViolation:
        limit = self._context.settings.max_session_s
        return self._violation(
            f"the session reached its maximum length of {limit} s",
            code="session_too_long",
            close_code=CloseCode.SESSION_CLOSED,
        )

    def _violation(
        self,
        message: str,
        *,
        code: str = "bad_request",
        close_code: CloseCode = CloseCode.BAD_REQUEST,
    ) -> ProtocolViolation:
        """A violation that ends the connection."""
        return ProtocolViolation(
            self._session_id, message, code=code, fatal=True, close_code=close_code
        )

    async def _stream(
        self, config: SessionConfig, hello: Hello, inbox: Subscription
    ) -> None:
        store = self._context.store
        settings = self._context.settings
        await self._join(config)
        self._exit_stack.push_async_callback(self._leave)
        resume = await store.resume(
            config.session_id,
            hello.epoch,
            hello.last_event_id,
            speaker=config.role == "speaker",
        )
        ready = Ready(
            session_id=config.session_id,
            replica=self._context.replica,
            source=config.source,
            targets=config.targets,
            sample_rate=config.sample_rate,
            epoch=resume.epoch,
            last_event_id=resume.last_event_id,
            input_samples=resume.input_samples,
            role=config.role,
        )
        await self._send_text(ready.model_dump_json())
        self._state = ConnectionState.STREAMING
        self._epoch = resume.epoch
        self._input_cursor = resume.input_samples
        self._acked = resume.input_samples
        # Every connection, listening or speaking, starts the session's
        # processor here: it takes over jobs that a dead replica left.
        self._processor = await self._exit_stack.enter_async_context(
            self._context.registry.attach(config)
        )
        logger.info(
            "session %s: connection open on %s from event %d, input at %d",
            config.session_id,
            self._context.replica,
            hello.last_event_id,
            resume.input_samples,
        )

        cursor = hello.last_event_id
        if cursor or hello.epoch:
            self._context.metrics.resumed()
        if resume.status != "ok":
            cursor = await self._recovery_impossible(resume)
        self._sample_rate = config.sample_rate
        delivery = asyncio.create_task(self._deliver(inbox, cursor))
        heartbeat = asyncio.create_task(self._heartbeat(config))
        try:
            async with asyncio.timeout(settings.max_session_s - self._age_s(config)):
                await self._receive(config)
        except TimeoutError as error:
            raise self._too_long() from error
        finally:
            await cancel_and_wait(delivery, heartbeat)

    async def _join(self, config: SessionConfig) -> None:
        limit = self._context.settings.max_connections_per_session
        # Listeners leave the last place to the speaker, who must be able to
        # come back after a drop however many follow the session.
        admitted = limit if config.role == "speaker" else limit - 1
        joined = await self._context.store.join(
            config.session_id, self._id, admitted, int(3000 * _HEARTBEAT_S)
        )
        if not joined:
            raise self._violation(
                f"the session already has {limit} connections open",
                code="too_many_connections",
                close_code=CloseCode.TOO_MANY_CONNECTIONS,
            )

    async def _heartbeat(self, config: SessionConfig) -> None:
        """Renews this connection's place, and the session's keys while it is open."""
        store = self._context.store
        touched = time.monotonic()
        while True:
            await asyncio.sleep(_HEARTBEAT_S)
            try:
                await self._join(config)
                if time.monotonic() - touched > store.ttl_s / 3:
                    await store.touch(config.session_id)
                    touched = time.monotonic()
            except ProtocolViolation as error:
                # Its place went stale (Redis was slow) and was taken.
                await self._fail(error)
                return
            except TolkError:
                # Redis is down or the session is gone: the connection's other
                # work finds out and ends it; counting can wait.
                continue

    async def _leave(self) -> None:
        # Best effort: an entry left behind goes stale by itself.
        with suppress(TolkError):
            await self._context.store.leave(self._session_id, self._id)

    async def _receive(self, config: SessionConfig) -> None:
        limit = self._context.settings.max_frame_bytes
        while True:
            message, self._held = self._held or await self._socket.receive(), None
            if message["type"] == "websocket.disconnect":
                return
            data: bytes | None = message.get("bytes")
            text: str | None = message.get("text")
            size = len(data) if data is not None else len((text or "").encode())
            if size > limit:
                raise self._violation(
                    f"message of {size} bytes is over the limit of {limit}",
                    code="message_too_big",
                    close_code=CloseCode.MESSAGE_TOO_BIG,
                )
            try:
                if config.role == "listener" and not _adds_target(text):
                    raise ProtocolViolation(
                        config.session_id,
                        "a listen-only connection may only add a target language",
                        code="forbidden",
                        fatal=False,
                    )
                if data is not None:
                    await self._on_audio(config, data)
                elif text is not None:
                    await self._on_control(config, text)
            except ProtocolViolation as error:
                if error.fatal:
                    raise
                await self._report(error)

    async def _on_audio(self, config: SessionConfig, data: bytes) -> None:
        if len(data) % 2:
            raise ProtocolViolation(
                config.session_id,
                "audio frames hold whole 16-bit samples: odd byte count",
                code="bad_audio",
                fatal=False,
            )
        await self._keep_pace(len(data) // 2)
        start = self._input_cursor
        self._input_cursor += len(data) // 2
        processor = self._require_processor()
        while True:
            try:
                stored = await processor.feed(data, start)
                break
            except InputThrottled as throttled:
                # Another connection of the session took its share first.
                if throttled.wait_s is None:
                    await self._wait_for_stages()
                else:
                    await self._watching(asyncio.sleep(throttled.wait_s))
        await self._heed(stored)

    async def _heed(self, stored: Stored) -> None:
        """Acknowledges stored input, then holds the speaker back if need be.

        Not reading pushes back on a fast client through TCP: it gets no
        error, and other sessions keep their share of the stages and Redis.
        The store refuses audio beyond both limits anyway; waiting here first
        spares the detector work on chunks it would refuse.
        """
        await self._ack(stored.position)
        if stored.pace_wait_s > 0:
            # The session's audio, over all its connections, is ahead of pace.
            await self._watching(asyncio.sleep(stored.pace_wait_s))
        if stored.backlogged:
            await self._wait_for_stages()

    async def _wait_for_stages(self) -> None:
        logger.warning(
            "session %s: utterances wait for the stages; input paused",
            self._session_id,
        )
        await self._watching(self._context.store.wait_for_backlog(self._session_id))
        logger.info("session %s: input resumed", self._session_id)

    async def _watching(self, waiting: Coroutine[Any, Any, Any]) -> None:
        """Awaits `waiting` while still noticing that the client went away.

        The next message is received and kept for after the wait, so a client
        that disconnects meanwhile does not leave a connection behind that
        counts against its session; the one after that is not read, and TCP
        pushes back.
        """
        task = asyncio.create_task(waiting)
        listening: asyncio.Task[Message] | None = None
        try:
            while self._held is None:
                listening = asyncio.create_task(self._socket.receive())
                await asyncio.wait(
                    {task, listening}, return_when=asyncio.FIRST_COMPLETED
                )
                if not listening.done():
                    break
                message, listening = listening.result(), None
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000))
                self._held = message
            await task
        finally:
            await cancel_and_wait(task, listening)

    async def _keep_pace(self, samples: int) -> None:
        """Holds the connection to `max_audio_speed` times real time, plus a burst.

        The session's pace, over reconnections, is kept in Redis; this one
        also counts audio the session had already, which a client may resend.
        """
        settings = self._context.settings
        self._audio_s += samples / self._sample_rate
        allowed_s = (time.monotonic() - self._opened) * settings.max_audio_speed
        ahead_s = self._audio_s - settings.audio_burst_s - allowed_s
        if ahead_s > 0:
            await asyncio.sleep(ahead_s / settings.max_audio_speed)

    async def _on_control(self, config: SessionConfig, text: str) -> None:
        try:
            message = client_message_adapter.validate_json(text)
        except ValidationError as error:
            raise ProtocolViolation(
                config.session_id,
                f"not a valid control message: {error.errors()[0]['msg']}",
                fatal=False,
            ) from error

        if isinstance(message, Hello):
            raise ProtocolViolation(
                config.session_id, "hello was already received", fatal=False
            )
        if isinstance(message, Configure) and message.sample_rate is not None:
            await self._change_rate(config, message.sample_rate)
        if isinstance(message, EndOfStream):
            processor = self._require_processor()
            await self._heed(await processor.end_of_stream(self._input_cursor))
        if isinstance(message, AddTarget):
            await self._add_target(config, message.language)

    async def _add_target(self, config: SessionConfig, language: str) -> None:
        refusal = (await self._context.capabilities()).refusal(
            config.source, [language]
        )
        if refusal is not None:
            raise ProtocolViolation(
                config.session_id, refusal, code="unsupported_language", fatal=False
            )
        store = self._context.store
        outcome = await store.add_target(config.session_id, language, MAX_TARGETS)
        if outcome == "full":
            raise ProtocolViolation(
                config.session_id,
                f"a session translates into at most {MAX_TARGETS} languages",
                code="too_many_targets",
                fatal=False,
            )
        if outcome == "added":
            await store.emit(config.session_id, TargetAdded(language=language))
            logger.info("session %s: target language added", config.session_id)

    async def _change_rate(self, config: SessionConfig, sample_rate: int) -> None:
        settings = self._context.settings
        if not settings.min_sample_rate <= sample_rate <= settings.max_sample_rate:
            raise ProtocolViolation(
                config.session_id,
                f"sample rate {sample_rate} Hz is outside "
                f"{settings.min_sample_rate}..{settings.max_sample_rate}",
                code="bad_sample_rate",
                fatal=False,
            )
        await self._require_processor().configure(sample_rate, self._input_cursor)
        self._sample_rate = sample_rate

    def _require_processor(self) -> SessionProcessor:
        assert self._processor is not None, "the processor starts before input"
        return self._processor

    async def _ack(self, position: int) -> None:
        # Audio that was stored before is acknowledged again only if the
        # client is behind: a resumed stream must learn where it stands.
        if position != self._acked:
            self._acked = position
            await self._send_text(Ack(input_samples=position).model_dump_json())

    async def _deliver(self, inbox: Subscription, cursor: int) -> None:
        """Sends the log after `cursor`, then live events, each id exactly once."""
        store = self._context.store
        touched = time.monotonic()
        try:
            cursor = await self._catch_up(cursor)
            while True:
                try:
                    async with asyncio.timeout(_IDLE_CHECK_S):
                        record = await inbox.get()
                except TimeoutError:
                    # Pub/Sub can miss a message without noticing; the log
                    # cannot. An open connection also keeps its session alive.
                    cursor = await self._catch_up(cursor)
                    if time.monotonic() - touched > store.ttl_s / 3:
                        await store.touch(self._session_id)
                        touched = time.monotonic()
                    continue
                if record is RESYNC:
                    # Redis was unreachable: it may have restarted without
                    # the newest events.
                    resume = await store.resume(self._session_id, self._epoch, cursor)
                    if resume.status != "ok":
                        cursor = await self._recovery_impossible(resume)
                    cursor = await self._catch_up(cursor)
                    continue
                if record.is_notice:
                    await self._session_closed()
                    return
                if record.id <= cursor:
                    continue
                if record.id > cursor + 1:
                    cursor = await self._catch_up(cursor, until=record.id - 1)
                await self._send_record(record)
                cursor = record.id
        except (WebSocketDisconnect, RuntimeError):
            # The socket closed under us; the receive side notices and ends.
            return
        except TolkError as error:
            await self._fail(error)

    async def _catch_up(self, cursor: int, until: int | None = None) -> int:
        store = self._context.store
        while until is None or cursor < until:
            records = await store.events_after(self._session_id, cursor)
            if not records:
                break
            if records[0].id > cursor + 1:
                # The log was trimmed past this connection while it lagged.
                resume = await store.resume(self._session_id, self._epoch, cursor)
                return await self._recovery_impossible(resume)
            for record in records:
                if until is not None and record.id > until:
                    return cursor
                await self._send_record(record)
                self._context.metrics.replayed(1)
                cursor = record.id
        return cursor

    async def _recovery_impossible(self, resume: Resume) -> int:
        """Tells the client its resume point is gone; returns the new cursor."""
        status: Literal["trimmed", "history_lost"] = (
            "trimmed" if resume.status == "trimmed" else "history_lost"
        )
        logger.warning(
            "session %s: cannot resume exactly (%s); continuing from event %d",
            self._session_id,
            status,
            resume.last_event_id,
        )
        self._epoch = resume.epoch
        self._context.metrics.recovery_impossible(status)
        notice = RecoveryImpossible(
            reason=status, epoch=resume.epoch, last_event_id=resume.last_event_id
        )
        await self._send_text(notice.model_dump_json())
        return resume.last_event_id

    async def _session_closed(self) -> None:
        logger.info("session %s: closed; closing its connection", self._session_id)
        await self._send_text(SessionClosed().model_dump_json())
        await self._socket.close(code=int(CloseCode.NORMAL))

    async def _send_record(self, record: EventRecord) -> None:
        async with self._send_lock:
            await self._socket.send_text(record.text)
            if record.payload:
                await self._socket.send_bytes(record.payload)

    async def _send_text(self, text: str) -> None:
        async with self._send_lock:
            await self._socket.send_text(text)

    async def _report(self, error: TolkError) -> None:
        message = error.message if isinstance(error, SessionError) else str(error)
        logger.warning("session %s: %s: %s", self._session_id, error.code, message)
        self._context.metrics.error(error.code)
        payload = ErrorMessage(code=error.code, message=message).model_dump_json()
        try:
            await self._send_text(payload)
        except (WebSocketDisconnect, RuntimeError):
            return

    async def _fail(self, error: TolkError) -> None:
        await self._report(error)
        if self._socket.application_state != WebSocketState.DISCONNECTED:
            try:
                await self._socket.close(code=int(error.close_code))
            except RuntimeError:
                return


def _adds_target(text: str | None) -> bool:
    """Whether a frame is an `add_target`, the one message a listener may send."""
    if text is None:
        return False
    try:
        return isinstance(client_message_adapter.validate_json(text), AddTarget)
    except ValidationError:
        return False
