"""Streaming clips through the service and judging what comes back."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from pathlib import Path

import numpy as np
import soxr
from whisper_normalizer.english import EnglishTextNormalizer

from app.audio_file import read_pcm16
from app.client import Connection, SessionOutput, TolkClient

CHUNK_S = 0.1
_ENGLISH = EnglishTextNormalizer()


def references(audio_dir: Path) -> dict[str, str]:
    lines = (audio_dir / "references.tsv").read_text().splitlines()[1:]
    return dict(line.split("\t", 1) for line in lines if "\t" in line)


def normalized(text: str) -> str:
    """English text as Whisper evaluations compare it: numbers as digits, etc."""
    return str(_ENGLISH(text))


def words(text: str) -> list[str]:
    """Lower-case words without punctuation or accents, for comparisons."""
    plain = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return re.findall(r"[a-z0-9']+", plain)


async def stream_clip(
    connection: Connection,
    path: Path,
    *,
    realtime: bool = False,
    trailing_silence_s: float = 0.0,
) -> None:
    pcm, rate = read_pcm16(path)
    pcm += bytes(2 * int(rate * trailing_silence_s))
    step = int(rate * CHUNK_S) * 2
    for offset in range(0, len(pcm), step):
        await connection.send_audio(pcm[offset : offset + step])
        if realtime:
            await asyncio.sleep(CHUNK_S)
    await connection.end()


async def collect(connection: Connection, timeout_s: float = 300) -> SessionOutput:
    """Everything the connection receives up to the end of the stream."""
    transcript = SessionOutput()

    async def read() -> None:
        async for message in connection.messages():
            transcript.add(message)
            if message.type == "end_of_stream":
                return

    await asyncio.wait_for(read(), timeout_s)
    return transcript


async def translate_clip(
    client: TolkClient,
    path: Path,
    targets: list[str],
    *,
    trailing_silence_s: float = 0.0,
) -> SessionOutput:
    _, rate = read_pcm16(path)
    session = await client.create_session("en", targets, rate)
    async with client.connect(session) as connection:
        receiving = asyncio.create_task(collect(connection))
        await stream_clip(connection, path, trailing_silence_s=trailing_silence_s)
        return await receiving


def speech_at_16k(pcm16: bytes, rate: int) -> np.ndarray:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
    return soxr.resample(samples, rate, 16_000) if rate != 16_000 else samples


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0


def share_read_back(expected: str, heard: str) -> float:
    """Share of the expected words that the recognizer heard."""
    wanted = words(expected)
    if not wanted:
        return 1.0
    heard_words = set(words(heard))
    return sum(word in heard_words for word in wanted) / len(wanted)
