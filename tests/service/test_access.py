"""Who may do what, over the real service: API keys, listener tokens, origins."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from app.client import TolkClient, TolkClientError
from app.protocol import CloseCode
from tests.service.conftest import ALLOWED_ORIGIN
from tests.service.helpers import collect, stream_clip

pytestmark = pytest.mark.service

_BODY = {"source": "en", "targets": ["pt"], "sample_rate": 22050}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic abc"}],
    ids=["none", "unknown", "not-bearer"],
)
async def test_creating_a_session_needs_an_api_key(
    service_url: str, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=service_url, timeout=30) as http:
        response = await http.post("/v1/sessions", json=_BODY, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_key_is_checked_before_the_body(service_url: str) -> None:
    key = os.environ["TOLK_API_KEY"]
    async with httpx.AsyncClient(base_url=service_url, timeout=30) as http:
        keyless = await http.post("/v1/sessions", content=b"{not json")
        broken = await http.post(
            "/v1/sessions",
            content=b"{not json",
            headers={"Authorization": f"Bearer {key}"},
        )
        huge = await http.post(
            "/v1/sessions",
            content=b" " * 100_000,
            headers={"Authorization": f"Bearer {key}"},
        )

    assert keyless.status_code == 401
    assert broken.status_code == 422 and broken.json()["detail"]
    assert huge.status_code == 413


async def test_a_listener_follows_and_cannot_speak(
    service_url: str, audio_dir: Path
) -> None:
    clip = audio_dir / "LJ001-0002.wav"
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 22050)
        listener = await client.add_listener(session)
        assert listener.token != session.token

        # A listener's token gives no speaker's rights.
        with pytest.raises(TolkClientError, match="403"):
            await client.add_listener(listener)
        with pytest.raises(TolkClientError, match="403"):
            await client.close_session(listener)

        async with client.connect(listener) as follower:
            assert follower.ready["role"] == "listener"
            await follower.send_audio(b"\x00\x00" * 1000)
            refusal = await anext(follower.messages())
            assert refusal.type == "error" and refusal.data["code"] == "forbidden"

            followed = asyncio.create_task(collect(follower))
            async with client.connect(session) as speaker:
                assert speaker.ready["role"] == "speaker"
                spoken = asyncio.create_task(collect(speaker))
                await stream_clip(speaker, clip)
                heard = await spoken
            seen = await followed

    assert heard.finals and seen.finals == heard.finals
    assert seen.translations == heard.translations


async def test_a_token_opens_its_own_session_only(service_url: str) -> None:
    async with TolkClient(service_url) as client:
        first = await client.create_session("en", ["pt"], 16000)
        second = await client.create_session("en", ["pt"], 16000)
        listener = await client.add_listener(first)

    for token in (first.token, listener.token):
        async with websockets.connect(second.websocket_url) as socket:
            await socket.send(json.dumps({"type": "hello", "token": token}))
            error = json.loads(await asyncio.wait_for(socket.recv(), 15))
            await asyncio.wait_for(socket.wait_closed(), 15)
        assert error["code"] == "unauthorized"
        assert socket.close_code == CloseCode.UNAUTHORIZED


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (ALLOWED_ORIGIN, True),
        ("https://evil.example", False),
        ("null", False),
    ],
)
async def test_browsers_connect_from_allowed_origins_only(
    service_url: str, origin: str | None, allowed: bool
) -> None:
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)
    headers = {"Origin": origin} if origin else {}

    if not allowed:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(session.websocket_url, additional_headers=headers)
        assert refused.value.response.status_code == 403
        return
    async with websockets.connect(
        session.websocket_url, additional_headers=headers
    ) as socket:
        await socket.send(json.dumps({"type": "hello", "token": session.token}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 15))["type"] == "ready"


async def test_the_service_own_pages_may_connect(service_url: str) -> None:
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 16000)

    async with websockets.connect(
        session.websocket_url, additional_headers={"Origin": service_url}
    ) as socket:
        await socket.send(json.dumps({"type": "hello", "token": session.token}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 15))["type"] == "ready"
