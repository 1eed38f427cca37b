"""The pipeline without the distribution: the same models in one process.

Same detector, segmenter, recognizer, translator and voice, with the settings
of a serve config file, fed the same program at the same real-time pace, with
partial transcripts on the same terms (one at a time, none while a final is
transcribed), finals started where an utterance has likely ended, and the
same pipelining (an utterance is translated and spoken while the next one is
transcribed); no Ray, no Redis, no sockets. What
Tolk's delays exceed this by is the cost of the distributed path.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import yaml

from app.bench.program import Program
from app.bench.report import Baseline, Spread, TimedUtterance
from app.bench.session import TRAILING_PAD_S
from app.phrasing import speech_segments
from app.resampling import ResamplerState, pcm16_to_float, resample
from app.segmenter import EndedUtterance, Segmenter, SegmenterState
from app.settings import IngressSettings
from app.vad import SpeechDetector
from deployments.recognition import SpeechRecognizer, TranscriberSettings
from deployments.schema import Transcript, TranscriptionRequest
from deployments.synthesis.voices import SpeechSynthesizer, SynthesizerSettings
from deployments.translation.routing import TextTranslator, TranslatorSettings


def stage_settings(config: Path) -> dict[str, dict[str, Any]]:
    """The `user_config` of each deployment in a serve config file."""
    if not config.exists():
        return {}
    document = yaml.safe_load(config.read_text())
    return {
        deployment["name"]: deployment.get("user_config") or {}
        for application in document.get("applications", [])
        for deployment in application.get("deployments", [])
    }


async def run_baseline(
    program: Program,
    targets: list[str],
    chunk_s: float,
    config: Path = Path("serve_config.yaml"),
) -> Baseline:
    """Delays of each utterance of `program`, on the clock `run_session` uses."""
    settings = stage_settings(config)
    recognizer = SpeechRecognizer(
        TranscriberSettings.model_validate(settings.get("Transcriber", {}))
    )
    translator = TextTranslator(
        TranslatorSettings.model_validate(settings.get("Translator", {}))
    )
    synthesizer = SpeechSynthesizer(
        SynthesizerSettings.model_validate(settings.get("Synthesizer", {}))
    )
    ingress = IngressSettings()
    phrasing = ingress.phrasing()
    segmenter = Segmenter(ingress.segmenter(), SpeechDetector())
    ended: asyncio.Queue[EndedUtterance | None] = asyncio.Queue()
    finals: list[float] = []
    first_audio: list[float] = []
    timed: dict[float, TimedUtterance] = {}
    started = time.monotonic()
    transcribing = asyncio.Event()
    previews: set[asyncio.Task[object]] = set()
    context = ""
    # The final started early: the utterance's audio, its prompt, the call.
    early: tuple[bytes, str, asyncio.Task[Transcript]] | None = None
    early_calls: set[asyncio.Task[Transcript]] = set()

    def start_early(utterance: EndedUtterance) -> None:
        nonlocal early
        # As the service does: only once every earlier final is known.
        if transcribing.is_set() or not ended.empty():
            return
        request = TranscriptionRequest(
            audio=pcm16_to_float(utterance.pcm), language="en", prompt=context
        )
        call = asyncio.create_task(asyncio.to_thread(recognizer.transcribe, request))
        early_calls.add(call)
        call.add_done_callback(early_calls.discard)
        early = (utterance.pcm, context, call)

    def preview(pcm16: bytes) -> None:
        if transcribing.is_set() or previews or (early and not early[2].done()):
            return
        request = TranscriptionRequest(
            audio=pcm16_to_float(pcm16), language="en", partial=True
        )
        task = asyncio.create_task(asyncio.to_thread(recognizer.transcribe, request))
        previews.add(task)
        task.add_done_callback(previews.discard)

    recognized: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()

    async def recognize() -> None:
        nonlocal context, early
        while (utterance := await ended.get()) is not None:
            speech_end = max(
                utterance.start_ms / 1000, utterance.end_ms / 1000 - TRAILING_PAD_S
            )
            request = TranscriptionRequest(
                audio=pcm16_to_float(utterance.pcm), language="en", prompt=context
            )
            transcribing.set()
            try:
                if early is not None and early[:2] == (utterance.pcm, context):
                    transcript = await early[2]
                else:
                    transcript = await asyncio.to_thread(recognizer.transcribe, request)
                early = None
            finally:
                transcribing.clear()
            if not transcript.text:
                continue
            finals.append(time.monotonic() - started - speech_end)
            timed[speech_end] = TimedUtterance(
                speech_end_s=speech_end,
                final_delay_s=finals[-1],
                asr_compute_s=transcript.compute_s,
            )
            context = (context + " " + transcript.text)[-ingress.context_chars :]
            recognized.put_nowait((transcript.text, speech_end))
        recognized.put_nowait(None)

    async def render() -> None:
        while (item := await recognized.get()) is not None:
            text, speech_end = item
            texts, _, _ = await asyncio.to_thread(
                translator.translate, [text], "en", targets[0]
            )
            # Spoken segment by segment, as the service does.
            for index, segment in enumerate(speech_segments(texts[0], phrasing)):
                await asyncio.to_thread(synthesizer.synthesize, segment, targets[0])
                if index == 0:
                    first_audio.append(time.monotonic() - started - speech_end)
                    timed[speech_end].first_audio_delay_s = first_audio[-1]

    workers = [asyncio.create_task(recognize()), asyncio.create_task(render())]
    state, buffer = SegmenterState(), bytearray()
    resampler = ResamplerState.start(program.sample_rate)
    step = max(1, int(program.sample_rate * chunk_s))
    total = len(program.pcm16) // 2
    for first in range(0, total, step):
        last = min(total, first + step)
        await asyncio.sleep(
            max(0.0, started + last / program.sample_rate - time.monotonic())
        )
        chunk = program.pcm16[first * 2 : last * 2]
        segmentation = await asyncio.to_thread(
            lambda c=chunk: segmenter.feed(state, buffer, resample(resampler, c))
        )
        for utterance in segmentation.ended:
            ended.put_nowait(utterance)
        if segmentation.likely_end is not None and not segmentation.ended:
            start_early(segmentation.likely_end)
        elif segmentation.partial_due and not segmentation.ended:
            preview(bytes(buffer))
    for utterance in segmenter.flush(state, buffer).ended:
        ended.put_nowait(utterance)
    ended.put_nowait(None)
    await asyncio.gather(*workers)
    await asyncio.gather(*previews, *early_calls)
    return Baseline(
        utterances=len(finals),
        final_delay_s=Spread.of(finals),
        first_audio_delay_s=Spread.of(first_audio),
        asr_compute_s=Spread.of(
            u.asr_compute_s for u in timed.values() if u.asr_compute_s is not None
        ),
        timed=list(timed.values()),
    )
