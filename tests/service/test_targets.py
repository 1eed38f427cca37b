"""A live session gains a target language that a listener asks for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.client import Connection, SessionOutput, TolkClient
from tests.service.helpers import collect, stream_clip

pytestmark = pytest.mark.service


async def _until(connection: Connection, kind: str) -> dict[str, object]:
    async with asyncio.timeout(60):
        async for message in connection.messages():
            if message.type == kind:
                return message.data
    raise AssertionError(f"the connection closed before a {kind!r}")


async def test_a_listener_adds_a_language_from_the_next_utterance_on(
    service_url: str, audio_dir: Path
) -> None:
    first, second = audio_dir / "LJ001-0002.wav", audio_dir / "LJ001-0003.wav"
    async with TolkClient(service_url) as client:
        session = await client.create_session("en", ["pt"], 22050)
        listener = await client.add_listener(session)

        async with client.connect(session) as speaker:
            before = asyncio.create_task(collect(speaker))
            await stream_clip(speaker, first)
            assert (await before).translations.keys() == {"pt"}

            async with client.connect(listener) as follower:
                # A language no stage serves is refused, and nothing changes.
                await follower.add_target("xx")
                refusal = await _until(follower, "error")
                assert refusal["code"] == "unsupported_language"

                await follower.add_target("es")
                added = await _until(follower, "target_added")
                assert added["language"] == "es"
            assert (await _until(speaker, "target_added"))["language"] == "es"

            after = asyncio.create_task(collect(speaker))
            await stream_clip(speaker, second)
            heard: SessionOutput = await after

        async with client.connect(session) as late:
            assert late.ready["targets"] == ["pt", "es"]

    (utterance,) = heard.finals
    assert heard.translations["pt"].keys() == {utterance}
    assert heard.translations["es"].keys() == {utterance}
    assert heard.translations["es"][utterance] != heard.translations["pt"][utterance]
    assert heard.speech("es")[utterance][1]
