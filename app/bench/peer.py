"""A peer, side by side: the same program streamed to a WhisperLive server.

Both systems are held to one yardstick. A clip of the program counts as
transcribed when a final segment reaching its end arrives, and its delay is
that arrival less the clip's end; the word error rate compares all final text
with the clips' reference texts. WhisperLive sends its recent segments again
and again as it re-transcribes its window; a segment is final once marked
`completed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import websockets

from app.bench.program import Program, at_rate
from app.bench.words import normalized_words

RATE = 16_000
# A completed segment this close to a clip's end is taken to reach it.
END_TOLERANCE_S = 0.5
CLOSE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class FinalSegment:
    """Final text of a span of the program, and when it arrived (session clock)."""

    at_s: float
    start_s: float
    end_s: float
    text: str


@dataclass
class TranscriptFigures:
    final_delays_s: list[float] = field(default_factory=list)
    word_error_rate: float | None = None
    missed_clips: int = 0


def transcript_figures(
    program: Program, finals: list[FinalSegment]
) -> TranscriptFigures:
    """Per-clip final delay and the word error rate of final segments."""
    import jiwer

    figures = TranscriptFigures()
    for span in program.spans:
        start_s = span.start / program.sample_rate
        end_s = span.end / program.sample_rate
        reaching = [
            final.at_s
            for final in finals
            if final.end_s >= end_s - END_TOLERANCE_S and final.start_s < end_s
        ]
        if reaching and min(reaching) >= start_s:
            figures.final_delays_s.append(min(reaching) - end_s)
        else:
            figures.missed_clips += 1

    reference = " ".join(normalized_words(" ".join(s.clip.text for s in program.spans)))
    ordered = sorted(finals, key=lambda final: final.start_s)
    hypothesis = " ".join(normalized_words(" ".join(f.text for f in ordered)))
    if reference:
        figures.word_error_rate = round(float(jiwer.wer(reference, hypothesis)), 4)
    return figures


async def stream_to_whisperlive(
    url: str, program: Program, *, chunk_s: float, model: str, language: str = "en"
) -> list[FinalSegment]:
    """Streams `program` at real-time pace to the WhisperLive server at `url`."""
    pcm16 = at_rate(program.pcm16, program.sample_rate, RATE)
    options = {
        "uid": uuid.uuid4().hex,
        "language": language,
        "task": "transcribe",
        "model": model,
        "use_vad": True,
        "audio_format": "int16",
    }
    completed: dict[tuple[float, float], FinalSegment] = {}
    async with websockets.connect(
        url, max_size=None, open_timeout=60, compression=None
    ) as socket:
        await socket.send(json.dumps(options))
        await _until_ready(socket)
        started = time.monotonic()
        receiving = asyncio.create_task(_collect(socket, started, completed))
        step = int(RATE * chunk_s)
        total = len(pcm16) // 2
        for first in range(0, total, step):
            last = min(total, first + step)
            await asyncio.sleep(max(0.0, started + last / RATE - time.monotonic()))
            await socket.send(pcm16[first * 2 : last * 2])
        # Silence after the last clip, as a speaker who stops gives, then the
        # end: the server completes what it holds and closes the connection.
        await asyncio.sleep(5.0)
        await socket.send(b"END_OF_AUDIO")
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            await asyncio.wait_for(asyncio.shield(receiving), CLOSE_TIMEOUT_S)
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
    return list(completed.values())


async def _until_ready(socket: websockets.ClientConnection) -> None:
    async for message in socket:
        data = json.loads(message)
        if data.get("message") == "SERVER_READY":
            return
        if data.get("status") in ("ERROR", "WAIT"):
            raise RuntimeError(f"WhisperLive refused the session: {data}")
    raise RuntimeError("WhisperLive closed the connection before it was ready")


async def _collect(
    socket: websockets.ClientConnection,
    started: float,
    completed: dict[tuple[float, float], FinalSegment],
) -> None:
    """Keeps the first arrival of each completed segment, by its time span."""
    async for message in socket:
        at = time.monotonic() - started
        data = json.loads(message)
        for segment in data.get("segments", []):
            if not segment.get("completed"):
                continue
            start_s, end_s = float(segment["start"]), float(segment["end"])
            completed.setdefault(
                (round(start_s, 2), round(end_s, 2)),
                FinalSegment(at, start_s, end_s, segment["text"].strip()),
            )


def english_model_folder(config: Path = Path("serve_config.yaml")) -> Path:
    """The folder of the model Tolk's config gives English finals: the peer's."""
    from app.bench.baseline import stage_settings
    from deployments.models import resolve_whisper_model
    from deployments.recognition import TranscriberSettings

    settings = TranscriberSettings.model_validate(
        stage_settings(config).get("Transcriber", {})
    )
    reference = settings.model
    if settings.partial_model and settings.partial_model_finals:
        reference = settings.partial_model
    return Path(resolve_whisper_model(reference))


if __name__ == "__main__":
    # For scripts that start the peer: prints the model folder it should serve.
    print(english_model_folder())
