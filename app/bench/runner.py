"""Runs the benchmark at each load level and writes the report."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from app.bench.program import Clip, build_program, load_clips
from app.bench.report import (
    Baseline,
    Level,
    Overhead,
    Report,
    Spread,
    capacity,
    write_plots,
)
from app.bench.session import SessionResult, UtteranceSample, run_session
from app.bench.words import TimedWord, time_words
from app.client import TolkClient


@dataclass(frozen=True)
class BenchOptions:
    url: str
    clips_dir: Path
    out: Path
    sessions: list[int] = field(default_factory=lambda: [1])
    clips_per_session: int = 6
    targets: list[str] = field(default_factory=lambda: ["pt"])
    chunk_ms: int = 40
    listeners: int = 0
    reconnect_every_s: float = 0.0
    baseline: bool = False


async def run_bench(options: BenchOptions, console: Console) -> Report:
    """Every load level in turn, then the baseline if asked; writes the report."""
    options.out.mkdir(parents=True, exist_ok=True)
    clips = load_clips(options.clips_dir)
    console.print(f"[dim]timing the words of {len(clips)} clips…[/dim]")
    words = await asyncio.to_thread(time_words, clips, options.out / "word_times.json")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")

    levels: list[Level] = []
    samples: list[UtteranceSample] = []
    async with TolkClient(options.url, timeout_s=120) as client:
        for count in options.sessions:
            results = await _level(client, options, clips, words, count, console)
            level = summarize(count, results)
            levels.append(level)
            samples += [u for r in results for u in r.utterances]
            console.print(_level_line(level))

    baseline = None
    if options.baseline:
        from app.bench.baseline import run_baseline

        console.print("[dim]in-process baseline…[/dim]")
        program = build_program(clips, options.clips_per_session)
        baseline = await run_baseline(program, options.targets, options.chunk_ms / 1000)

    report = Report(
        url=options.url,
        started_at=started_at,
        machine={
            "cpus": os.cpu_count() or 0,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        scenario={
            "sessions": options.sessions,
            "clips_per_session": options.clips_per_session,
            "clips_dir": str(options.clips_dir),
            "targets": options.targets,
            "chunk_ms": options.chunk_ms,
            "listeners": options.listeners,
            "reconnect_every_s": options.reconnect_every_s,
        },
        levels=levels,
        capacity_sessions=capacity(levels),
        baseline=baseline,
        overhead=_overhead(levels[0], baseline) if baseline and levels else None,
        samples=[asdict(s) for s in samples],
    )
    (options.out / "report.json").write_text(report.model_dump_json(indent=2))
    await asyncio.to_thread(write_plots, report, options.out, report.samples)
    console.print(f"report and plots in {options.out}")
    return report


async def _level(
    client: TolkClient,
    options: BenchOptions,
    clips: list[Clip],
    words: dict[str, list[TimedWord]],
    count: int,
    console: Console,
) -> list[SessionResult]:
    programs = [
        build_program(clips, options.clips_per_session, offset=index)
        for index in range(count)
    ]
    longest = max(program.duration_s for program in programs)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{count} sessions", total=longest)
        runs = [
            asyncio.create_task(
                run_session(
                    client,
                    index,
                    program,
                    words,
                    targets=options.targets,
                    chunk_s=options.chunk_ms / 1000,
                    listeners=options.listeners,
                    reconnect_every_s=options.reconnect_every_s,
                )
            )
            for index, program in enumerate(programs)
        ]
        started = time.monotonic()
        while not all(run.done() for run in runs):
            progress.update(task, completed=min(longest, time.monotonic() - started))
            await asyncio.wait(runs, timeout=0.5)
    return [run.result() for run in runs]


def summarize(count: int, results: list[SessionResult]) -> Level:
    utterances = [u for r in results for u in r.utterances]
    speech_s = sum(u.speech_s for u in utterances)

    def per_speech(values: list[float | None]) -> float:
        measured = [v for v in values if v is not None]
        return round(sum(measured) / speech_s, 4) if speech_s else 0.0

    return Level(
        sessions=count,
        utterances=len(utterances),
        speech_s=round(speech_s, 2),
        partial_delay_s=Spread.of(d for u in utterances for d in u.partial_delays_s),
        final_delay_s=Spread.of(u.final_delay_s for u in utterances),
        first_audio_delay_s=Spread.of(u.first_audio_delay_s for u in utterances),
        asr_compute_s=Spread.of(u.asr_compute_s for u in utterances),
        mt_compute_s=Spread.of(u.mt_compute_s for u in utterances),
        tts_compute_s=Spread.of(u.tts_compute_s for u in utterances),
        resume_s=Spread.of(seconds for r in results for _, seconds in r.resumes),
        resume_missed_events=Spread.of(
            float(missed) for r in results for missed, _ in r.resumes
        ),
        # Final passes only: partial passes are not reported per event.
        cpu_s_per_speech_s={
            "transcription": per_speech([u.asr_compute_s for u in utterances]),
            "translation": per_speech([u.mt_compute_s for u in utterances]),
            "synthesis": per_speech([u.tts_compute_s for u in utterances]),
        },
        replicas_reached=len({replica for r in results for replica in r.replicas}),
        event_ids_exact=all(r.event_ids_exact for r in results),
        errors=[error for r in results for error in r.errors],
    )


def _overhead(level: Level, baseline: Baseline) -> Overhead:
    def difference(ours: Spread, theirs: Spread) -> float | None:
        if ours.p50 is None or theirs.p50 is None:
            return None
        return round(ours.p50 - theirs.p50, 4)

    first_audio = difference(level.first_audio_delay_s, baseline.first_audio_delay_s)
    share = None
    if first_audio is not None and level.first_audio_delay_s.p50:
        share = round(first_audio / level.first_audio_delay_s.p50, 4)
    return Overhead(
        final_delay_s=difference(level.final_delay_s, baseline.final_delay_s),
        first_audio_delay_s=first_audio,
        share_of_first_audio=share,
    )


def _level_line(level: Level) -> str:
    def show(spread: Spread) -> str:
        if spread.p50 is None or spread.p95 is None:
            return "n/a"
        return f"{spread.p50:.2f}/{spread.p95:.2f} s"

    return (
        f"{level.sessions} sessions, {level.utterances} utterances: "
        f"partial {show(level.partial_delay_s)}, final {show(level.final_delay_s)}, "
        f"first audio {show(level.first_audio_delay_s)} (p50/p95)"
        + (f", [red]{len(level.errors)} errors[/red]" if level.errors else "")
    )
