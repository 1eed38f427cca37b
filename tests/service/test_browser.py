"""The browser page, in a real headless Chromium with a clip as its microphone."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile
from playwright.async_api import Browser, Page, async_playwright, expect

from app.audio_file import read_pcm16
from tests.service.helpers import references, words

pytestmark = pytest.mark.service

# Long waits: the first translated speech of a page waits for the models.
SLOW_MS = 120_000


def _microphone_file(audio_dir: Path, folder: Path) -> Path:
    """Two clips with pauses, as Chromium's fake microphone plays them in a loop."""
    parts = []
    for name in ("LJ001-0002.wav", "LJ001-0004.wav"):
        pcm, rate = read_pcm16(audio_dir / name)
        parts += [np.frombuffer(pcm, dtype="<i2"), np.zeros(rate * 2, dtype="<i2")]
    path = folder / "microphone.wav"
    soundfile.write(path, np.concatenate(parts), rate, subtype="PCM_16")
    return path


@pytest.fixture
def artifacts() -> Path:
    """Where the screenshots are kept, for people to look at after a run."""
    folder = Path(os.environ.get("TOLK_TEST_ARTIFACTS", "test-artifacts"))
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
async def browser(audio_dir: Path, tmp_path: Path) -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed: make test installs it as root"
    microphone = _microphone_file(audio_dir, tmp_path)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        await browser.close()


async def _text_in(page: Page, selector: str) -> str:
    element = page.locator(selector).first
    await expect(element).not_to_be_empty(timeout=SLOW_MS)
    return await element.inner_text()


async def _event_ids(page: Page) -> list[int]:
    return list(await page.evaluate("window.tolk.eventIds"))


async def test_the_page_translates_a_microphone_and_shares_a_listen_link(
    service_url: str, browser: Browser, audio_dir: Path, artifacts: Path
) -> None:
    speaker = await (await browser.new_context()).new_page()
    await speaker.goto(service_url + "/")
    await speaker.fill("#api-key", os.environ["TOLK_API_KEY"])
    await speaker.select_option("#source", "en")
    await speaker.select_option("#target", "pt")
    await speaker.click("#start")
    await expect(speaker.locator("body")).to_have_attribute("data-state", "live")

    # The first utterance: its transcript, its translation, its speech played.
    final = await _text_in(speaker, ".source.final")
    spoken = set(words(references(audio_dir)["LJ001-0002.wav"]))
    assert len(spoken & set(words(final))) >= len(spoken) // 2, final
    assert await _text_in(speaker, ".translation[data-language=pt]")
    await expect(speaker.locator("body")).to_have_attribute(
        "data-segments-played", re.compile(r"[1-9]\d*"), timeout=SLOW_MS
    )

    # A dropped connection comes back, and nothing is lost or repeated.
    await speaker.evaluate("window.tolk.stream.drop()")
    await expect(speaker.locator("#state")).to_contain_text("reconnecting")
    await expect(speaker.locator("body")).to_have_attribute("data-state", "live")

    # A listener opens the shared link in another browser and adds Spanish.
    await speaker.click("#share")
    await expect(speaker.locator("#share-link")).to_have_value(re.compile("#listen="))
    link = urlsplit(await speaker.input_value("#share-link"))
    # The token is in the fragment only: no request line or log sees it.
    assert (link.path, link.query) == ("/", "")
    listener = await (await browser.new_context()).new_page()
    await listener.goto(link.geturl())
    await expect(listener.locator("body")).to_have_attribute("data-state", "live")
    await listener.select_option("#add-language", "es")
    await listener.click("#add")
    await listener.select_option("#hear", "es")
    assert await _text_in(listener, ".translation[data-language=es]")
    assert await _text_in(speaker, ".translation[data-language=es]")

    await speaker.click("#stop")
    await speaker.screenshot(path=artifacts / "browser-speaker.png", full_page=True)
    await listener.screenshot(path=artifacts / "browser-listener.png", full_page=True)

    for page in (speaker, listener):
        ids = await _event_ids(page)
        assert ids == list(range(1, len(ids) + 1)), ids
    assert await speaker.evaluate("window.tolk.stream.reconnects") >= 1
