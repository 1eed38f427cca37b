"""Bad input over the real socket: a clear error, and the session goes on."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from app.client import TolkClient, TolkClientError
from app.protocol import CloseCode

pytestmark = pytest.mark.service


async def _open(service_url: str) -> tuple[str, str, str]:
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["es"], 16000)
    return session.websocket_url, session.session_id, session.token


async def _closed_with(socket: websockets.ClientConnection) -> tuple[int, dict]:
    error = json.loads(await asyncio.wait_for(socket.recv(), 15))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(socket.recv(), 15)
    assert socket.close_code is not None
    return socket.close_code, error


async def test_wrong_token_is_refused(service_url: str) -> None:
    url, _, token = await _open(service_url)
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "hello", "token": token[::-1]}))
        code, error = await _closed_with(socket)

    assert code == CloseCode.UNAUTHORIZED and error["code"] == "unauthorized"


async def test_unknown_session_is_refused(service_url: str) -> None:
    url, _, token = await _open(service_url)
    async with websockets.connect(url.rsplit("/", 1)[0] + "/nosuch") as socket:
        await socket.send(json.dumps({"type": "hello", "token": token}))
        code, error = await _closed_with(socket)

    assert code == CloseCode.SESSION_NOT_FOUND
    assert error["code"] == "session_not_found"


async def test_audio_before_hello_is_refused(service_url: str) -> None:
    url, _, _ = await _open(service_url)
    async with websockets.connect(url) as socket:
        await socket.send(b"\x00\x00" * 100)
        code, error = await _closed_with(socket)

    assert code == CloseCode.BAD_REQUEST and "hello" in error["message"]


async def test_bad_frames_get_errors_and_session_goes_on(service_url: str) -> None:
    url, _, token = await _open(service_url)
    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "hello", "token": token}))
        assert json.loads(await socket.recv())["type"] == "ready"

        replies = []
        for frame in (b"\x01\x02\x03", "{not json", '{"type": "shout"}'):
            await socket.send(frame)
            replies.append(json.loads(await asyncio.wait_for(socket.recv(), 15)))
        await socket.send(json.dumps({"type": "config", "sample_rate": 5}))
        replies.append(json.loads(await asyncio.wait_for(socket.recv(), 15)))

        await socket.send(b"\x00\x00" * 1600)
        await socket.send(json.dumps({"type": "end"}))
        acks = []
        ended = json.loads(await asyncio.wait_for(socket.recv(), 60))
        while ended["type"] == "ack":
            acks.append(ended["input_samples"])
            ended = json.loads(await asyncio.wait_for(socket.recv(), 60))

    assert [r["code"] for r in replies] == [
        "bad_audio",
        "bad_request",
        "bad_request",
        "bad_sample_rate",
    ]
    assert ended["type"] == "end_of_stream" and ended["id"] == 1
    # The odd-sized frame was dropped: only the good one counts.
    assert acks == [1600]


async def test_oversize_frame_closes_with_1009(service_url: str) -> None:
    url, _, token = await _open(service_url)
    async with websockets.connect(url, max_size=None) as socket:
        await socket.send(json.dumps({"type": "hello", "token": token}))
        await socket.recv()
        await socket.send(b"\x00" * (2 << 20))
        code, error = await _closed_with(socket)

    assert code == CloseCode.MESSAGE_TOO_BIG and error["code"] == "message_too_big"


@pytest.mark.parametrize(
    "body",
    [
        {"source": "en", "targets": ["xx"]},
        {"source": "zz", "targets": ["es"]},
        {"source": "en", "targets": ["es"], "sample_rate": 1},
        {"source": "en", "targets": []},
    ],
)
async def test_unservable_sessions_are_refused(service_url: str, body: dict) -> None:
    key = os.environ["TOLK_API_KEY"]
    async with httpx.AsyncClient(base_url=service_url) as http:
        response = await http.post(
            "/v1/sessions", json=body, headers={"Authorization": f"Bearer {key}"}
        )

    assert response.status_code == 422
    assert response.json()["detail"]


async def test_client_reports_refusal(service_url: str) -> None:
    async with TolkClient(service_url) as client:
        with pytest.raises(TolkClientError, match="no translation"):
            await client.create_session("en", ["fi"], 16000)
