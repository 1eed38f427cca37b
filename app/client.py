"""Python client of the session protocol, used by `tolk translate` and the tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection


class TolkClientError(Exception):
    """The service refused a request or broke the protocol."""


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


@dataclass
class SessionOutput:
    """Everything a connection received, grouped per utterance and language."""

    finals: dict[int, str] = field(default_factory=dict)
    translations: dict[str, dict[int, str]] = field(default_factory=dict)
    audio: dict[str, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    event_ids: list[int] = field(default_factory=list)

    def add(self, message: ServerMessage) -> None:
        if message.id is not None:
            self.event_ids.append(message.id)
        data = message.data
        if message.type == "final":
            self.finals[data["utterance"]] = data["text"]
        elif message.type == "translation":
            by_utterance = self.translations.setdefault(data["language"], {})
            by_utterance[data["utterance"]] = data["text"]
        elif message.type == "audio" and message.audio is not None:
            chunks = self.audio.setdefault(data["language"], [])
            chunks.append((data["utterance"], data["sample_rate"], message.audio))

    @property
    def text(self) -> str:
        return " ".join(self.finals[n] for n in sorted(self.finals) if self.finals[n])


class TolkClient:
    """Creates sessions over HTTP and opens their WebSockets."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
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

    async def create_session(
        self, source: str, targets: list[str], sample_rate: int
    ) -> SessionHandle:
        body = {"source": source, "targets": targets, "sample_rate": sample_rate}
        response = await self._http.post("/v1/sessions", json=body)
        _raise_for(response)
        created = response.json()
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        host = self.base_url.split("://", 1)[1]
        return SessionHandle(
            session_id=created["session_id"],
            token=created["token"],
            websocket_url=f"{scheme}://{host}{created['websocket_path']}",
        )

    def connect(self, session: SessionHandle, *, last_event_id: int = 0) -> Connection:
        return Connection(session, last_event_id=last_event_id)


class Connection:
    """One WebSocket of a session; use as `async with client.connect(...)`."""

    def __init__(self, session: SessionHandle, *, last_event_id: int = 0) -> None:
        self.session = session
        self.last_event_id = last_event_id
        self.ready: dict[str, Any] = {}
        self._socket: ClientConnection | None = None

    async def __aenter__(self) -> Connection:
        self._socket = await websockets.connect(
            self.session.websocket_url, max_size=64 * 1024 * 1024
        )
        hello = {
            "type": "hello",
            "token": self.session.token,
            "last_event_id": self.last_event_id,
        }
        await self._socket.send(json.dumps(hello))
        first = json.loads(await self._socket.recv())
        if first.get("type") != "ready":
            await self._socket.close()
            raise TolkClientError(f"{first.get('code')}: {first.get('message')}")
        self.ready = first
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def replica(self) -> str:
        return str(self.ready.get("replica", ""))

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()

    async def send_audio(self, pcm16: bytes) -> None:
        await self._require().send(pcm16)

    async def configure(self, *, sample_rate: int) -> None:
        message = {"type": "config", "sample_rate": sample_rate}
        await self._require().send(json.dumps(message))

    async def end(self) -> None:
        await self._require().send(json.dumps({"type": "end"}))

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
            yield ServerMessage(type=data.get("type", ""), data=data, audio=audio)

    def _require(self) -> ClientConnection:
        if self._socket is None:
            raise TolkClientError("the connection is not open")
        return self._socket


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
    "TolkClient",
    "TolkClientError",
]
