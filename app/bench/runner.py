"""Runs the benchmark at each load level and writes the report."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress

from app.bench.peer import (
    TranscriptFigures,
    english_model_folder,
    stream_to_whisperlive,
    transcript_figures,
)
from app.bench.program import (
    Clip,
    Program,
    build_program,
    clips_spoken,
    load_clips,
)
from app.bench.report import (
    Baseline,
    Level,
    LoadPeriod,
    Overhead,
    PeerComparison,
    ReplicaCount,
    Report,
    Spread,
    TranscriptQuality,
    capacity,
    scaling,
    write_plots,
)
from app.bench.session import SessionResult, UtteranceSample, run_session
from app.bench.words import TimedWord, time_words
from app.client import TolkClient, TolkClientError
from app.usage import FLUSH_S


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
    # How long a dropped listener stays away; speakers come back at once.
    away_s: float = 0.0
    baseline: bool = False
    # Replicas are polled this often; 0 turns polling off.
    poll_replicas_s: float = 2.0
    # Polling goes on this long after the last level, to see scaling down.
    cooldown_s: float = 0.0
    # A WhisperLive server given the same program as the first session.
    peer_url: str | None = None
    # The serve config whose stage settings the baseline loads.
    config: Path = Path("serve_config.yaml")
    # Creates the sessions; None: TOLK_API_KEY.
    api_key: str | None = None


async def run_bench(options: BenchOptions, console: Console) -> Report:
    """Every load level in turn, then the baseline if asked; writes the report."""
    options.out.mkdir(parents=True, exist_ok=True)
    clips = load_clips(options.clips_dir)
    spoken = clips_spoken(clips, max(options.sessions), options.clips_per_session)
    console.print(f"[dim]timing the words of {len(spoken)} clips…[/dim]")
    words = await asyncio.to_thread(time_words, spoken, options.out / "word_times.json")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")

    levels: list[Level] = []
    periods: list[LoadPeriod] = []
    samples: list[UtteranceSample] = []
    replicas: list[ReplicaCount] = []
    first: SessionResult | None = None
    async with TolkClient(
        options.url, api_key=options.api_key, timeout_s=120
    ) as client:
        run_started = time.monotonic()
        watching = asyncio.create_task(
            _watch_replicas(client, options.poll_replicas_s, run_started, replicas)
        )
        try:
            for count in options.sessions:
                start_s = time.monotonic() - run_started
                before = await _usage(client)
                results = await _level(client, options, clips, words, count, console)
                # The ingress flushes the stages' readings every second.
                await asyncio.sleep(FLUSH_S + 0.5)
                spent = _spent(before, await _usage(client))
                first = first or results[0]
                periods.append(
                    LoadPeriod(
                        sessions=count,
                        start_s=round(start_s, 2),
                        end_s=round(time.monotonic() - run_started, 2),
                    )
                )
                level = summarize(count, results, spent)
                levels.append(level)
                samples += [u for r in results for u in r.utterances]
                console.print(_level_line(level))
            if options.cooldown_s > 0:
                await _cool_down(options.cooldown_s, replicas, console)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    comparison = None
    if options.peer_url and first is not None:
        console.print(f"[dim]the same program to {options.peer_url}…[/dim]")
        program = build_program(clips, options.clips_per_session)
        comparison = await _compare(options, program, first)
        console.print(_comparison_line(comparison))

    baseline = None
    if options.baseline:
        from app.bench.baseline import run_baseline

        console.print("[dim]in-process baseline…[/dim]")
        program = build_program(clips, options.clips_per_session)
        baseline = await run_baseline(
            program, options.targets, options.chunk_ms / 1000, options.config
        )
        console.print(_baseline_line(baseline))

    report = Report(
        url=options.url,
        started_at=started_at,
        machine={
            "cpus": os.cpu_count() or 0,
            "cpu": _cpu_model(),
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
            "away_s": options.away_s,
            "cooldown_s": options.cooldown_s,
        },
        levels=levels,
        capacity_sessions=capacity(levels),
        baseline=baseline,
        overhead=_overhead(levels[0], first, baseline)
        if baseline and levels and first
        else None,
        peer=comparison,
        load_periods=periods,
        replicas=replicas,
        scaling=scaling(replicas),
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
                    away_s=options.away_s,
                )
            )
            for index, program in enumerate(programs)
        ]
        started = time.monotonic()
        while not all(run.done() for run in runs):
            progress.update(task, completed=min(longest, time.monotonic() - started))
            await asyncio.wait(runs, timeout=0.5)
    return [run.result() for run in runs]


async def _watch_replicas(
    client: TolkClient, every_s: float, started: float, into: list[ReplicaCount]
) -> None:
    """Appends the running replicas of each deployment every `every_s` seconds."""
    if every_s <= 0:
        return
    while True:
        try:
            deployments = await client.deployments()
        except (TolkClientError, httpx.HTTPError):
            # A deployment without the endpoint, or a busy one: no sample.
            deployments = None
        if deployments is not None:
            running = {
                name: int(details["replicas"].get("RUNNING", 0))
                for name, details in deployments.items()
            }
            at_s = round(time.monotonic() - started, 2)
            into.append(ReplicaCount(at_s=at_s, running=running))
        await asyncio.sleep(every_s)


async def _cool_down(
    seconds: float, replicas: list[ReplicaCount], console: Console
) -> None:
    """Waits with no load, showing the replica counts as they change."""
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("cool-down", total=seconds)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            latest = replicas[-1].running if replicas else {}
            shown = " ".join(f"{name}={n}" for name, n in sorted(latest.items()))
            progress.update(task, completed=elapsed, description=f"cool-down {shown}")
            await asyncio.sleep(1.0)


async def _usage(client: TolkClient) -> dict[str, dict[str, float]] | None:
    try:
        return await client.usage()
    except (TolkClientError, httpx.HTTPError):
        # A deployment without the endpoint: no CPU figures.
        return None


def _spent(
    before: dict[str, dict[str, float]] | None,
    after: dict[str, dict[str, float]] | None,
) -> dict[str, float] | None:
    """CPU seconds each stage used between two readings, over all replicas.

    A replica first seen in the second reading is counted from its start,
    its model loading included.
    """
    if before is None or after is None:
        return None
    return {
        stage: round(
            sum(
                cpu_s - before.get(stage, {}).get(replica, 0.0)
                for replica, cpu_s in replicas.items()
            ),
            3,
        )
        for stage, replicas in after.items()
    }


def summarize(
    count: int, results: list[SessionResult], cpu_s: dict[str, float] | None = None
) -> Level:
    """The figures of one level; `cpu_s` is what each stage's replicas used."""
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
        first_segment_compute_s=Spread.of(
            u.first_segment_compute_s for u in utterances
        ),
        first_audio_wait_s=Spread.of(_first_audio_wait(u) for u in utterances),
        resume_s=Spread.of(seconds for r in results for _, seconds in r.resumes),
        resume_missed_events=Spread.of(
            float(missed) for r in results for missed, _ in r.resumes
        ),
        # Final passes only: partial passes are not reported per event.
        compute_s_per_speech_s={
            "transcription": per_speech([u.asr_compute_s for u in utterances]),
            "translation": per_speech([u.mt_compute_s for u in utterances]),
            "synthesis": per_speech([u.tts_compute_s for u in utterances]),
        },
        cpu_s_per_speech_s=None
        if cpu_s is None or not speech_s
        else {stage: round(seconds / speech_s, 4) for stage, seconds in cpu_s.items()},
        replicas_reached=len({replica for r in results for replica in r.replicas}),
        event_ids_exact=all(r.event_ids_exact for r in results),
        errors=[error for r in results for error in r.errors],
    )


async def _compare(
    options: BenchOptions, program: Program, tolk: SessionResult
) -> PeerComparison:
    """Streams `program` to the peer; both held to the same yardstick."""
    # The peer runs the model it was started with; this names it for its log.
    model = str(english_model_folder())
    assert options.peer_url is not None
    finals = await stream_to_whisperlive(
        options.peer_url, program, chunk_s=options.chunk_ms / 1000, model=model
    )

    def quality(system: str, figures: TranscriptFigures) -> TranscriptQuality:
        return TranscriptQuality(
            system=system,
            final_delay_s=Spread.of(figures.final_delays_s),
            word_error_rate=figures.word_error_rate,
            missed_clips=figures.missed_clips,
        )

    return PeerComparison(
        url=options.peer_url,
        tolk=quality("tolk", transcript_figures(program, tolk.finals)),
        peer=quality("whisperlive", transcript_figures(program, finals)),
    )


def _baseline_line(baseline: Baseline) -> str:
    final, audio = baseline.final_delay_s, baseline.first_audio_delay_s
    if final.p50 is None or final.p95 is None:
        return "baseline: no final transcripts"
    shown = f"baseline: final {final.p50:.2f}/{final.p95:.2f} s"
    if audio.p50 is not None and audio.p95 is not None:
        shown += f", first audio {audio.p50:.2f}/{audio.p95:.2f} s"
    return shown + " (p50/p95)"


def _comparison_line(comparison: PeerComparison) -> str:
    def show(quality: TranscriptQuality) -> str:
        spread = quality.final_delay_s
        delays = "n/a" if spread.p50 is None else f"{spread.p50:.2f}/{spread.p95:.2f} s"
        return f"{quality.system}: final {delays}, WER {quality.word_error_rate}"

    return f"{show(comparison.tolk)}; {show(comparison.peer)} (p50/p95)"


def _overhead(level: Level, session: SessionResult, baseline: Baseline) -> Overhead:
    """Tolk against the baseline, utterance by utterance of the same program."""
    theirs = {round(u.speech_end_s, 2): u for u in baseline.timed}
    pairs = [
        (ours, theirs[round(ours.speech_end_s, 2)])
        for ours in session.utterances
        if round(ours.speech_end_s, 2) in theirs
    ]
    finals = [ours.final_delay_s - base.final_delay_s for ours, base in pairs]
    first_audio = [
        ours.first_audio_delay_s - base.first_audio_delay_s
        for ours, base in pairs
        if ours.first_audio_delay_s is not None and base.first_audio_delay_s is not None
    ]
    compute = [
        ours.asr_compute_s - base.asr_compute_s
        for ours, base in pairs
        if base.asr_compute_s is not None
    ]
    first_audio_s = _median(first_audio)
    share = None
    if first_audio_s is not None and level.first_audio_delay_s.p50:
        share = round(first_audio_s / level.first_audio_delay_s.p50, 4)
    return Overhead(
        paired_utterances=len(pairs),
        final_delay_s=_median(finals),
        first_audio_delay_s=first_audio_s,
        share_of_first_audio=share,
        asr_compute_s=_median(compute),
    )


def _first_audio_wait(utterance: UtteranceSample) -> float | None:
    first_audio = utterance.first_audio_delay_s
    translation = utterance.mt_compute_s
    segment = utterance.first_segment_compute_s
    if first_audio is None or translation is None or segment is None:
        return None
    return first_audio - utterance.final_delay_s - translation - segment


def _cpu_model() -> str:
    """The processor's name: figures from different machines differ by it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _level_line(level: Level) -> str:
    def show(spread: Spread) -> str:
        if spread.p50 is None or spread.p95 is None:
            return "n/a"
        return f"{spread.p50:.2f}/{spread.p95:.2f} s"

    return (
        f"{_count(level.sessions, 'session')}, "
        f"{_count(level.utterances, 'utterance')}: "
        f"partial {show(level.partial_delay_s)}, final {show(level.final_delay_s)}, "
        f"first audio {show(level.first_audio_delay_s)} (p50/p95)"
        + (f", [red]{len(level.errors)} errors[/red]" if level.errors else "")
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
