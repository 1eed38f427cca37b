"""Benchmark results: percentiles, the JSON report, and its plots."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

CAPACITY_LIMIT_S = 3.0


class Spread(BaseModel):
    """p50, p95 and max of some seconds; all None when nothing was measured."""

    count: int
    p50: float | None = None
    p95: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        measured = sorted(v for v in values if v is not None)
        if not measured:
            return cls(count=0)
        return cls(
            count=len(measured),
            p50=_percentile(measured, 50),
            p95=_percentile(measured, 95),
            max=measured[-1],
        )


class Level(BaseModel):
    """Everything measured at one number of concurrent sessions."""

    sessions: int
    utterances: int
    speech_s: float
    partial_delay_s: Spread
    final_delay_s: Spread
    first_audio_delay_s: Spread
    asr_compute_s: Spread
    mt_compute_s: Spread
    tts_compute_s: Spread
    first_segment_compute_s: Spread = Field(
        default_factory=lambda: Spread(count=0),
        description="The voice's compute time on each utterance's first segment.",
    )
    first_audio_wait_s: Spread = Field(
        default_factory=lambda: Spread(count=0),
        description="First audio less the final, the translation and the first "
        "segment's speech: the wait for the voice to be free, and the path.",
    )
    resume_s: Spread
    resume_missed_events: Spread
    compute_s_per_speech_s: dict[str, float] = Field(
        description="Wall time inside each stage, final passes only, per second "
        "of speech."
    )
    cpu_s_per_speech_s: dict[str, float] | None = Field(
        None,
        description="CPU seconds of each stage's replicas over the level, partial "
        "passes included, per second of speech.",
    )
    replicas_reached: int
    event_ids_exact: bool
    errors: list[str]


class ReplicaCount(BaseModel):
    """Running replicas of each deployment, `at_s` seconds into the run."""

    at_s: float
    running: dict[str, int]


class LoadPeriod(BaseModel):
    """When one load level ran, in seconds into the run."""

    sessions: int
    start_s: float
    end_s: float


class TimedUtterance(BaseModel):
    """One utterance's delays, and when its speech ended on the session clock."""

    speech_end_s: float
    final_delay_s: float
    first_audio_delay_s: float | None = None
    asr_compute_s: float | None = None


class Baseline(BaseModel):
    """The same clips through the same models in one process: no Ray, no Redis."""

    utterances: int
    final_delay_s: Spread
    first_audio_delay_s: Spread
    asr_compute_s: Spread = Field(
        default_factory=lambda: Spread(count=0),
        description="The recognizer's compute time on each final.",
    )
    timed: list[TimedUtterance] = Field(default_factory=list)


class Overhead(BaseModel):
    """What the distributed path adds over the in-process baseline.

    The median, over the utterances both ran, of Tolk's delay less the
    baseline's for the same utterance: the two cut the program into the same
    utterances, and pairing them takes out how long each one is.
    """

    paired_utterances: int = 0
    final_delay_s: float | None
    first_audio_delay_s: float | None
    share_of_first_audio: float | None
    asr_compute_s: float | None = Field(
        None,
        description="The recognizer's compute on each final, Tolk's less the "
        "baseline's: how much slower it runs beside the rest of the service on "
        "the same CPUs. The final delay's difference less this is the path's.",
    )


class TranscriptQuality(BaseModel):
    """One system's final transcripts of a program, on the peer yardstick."""

    system: str
    final_delay_s: Spread = Field(description="From each clip's end to its final.")
    word_error_rate: float | None
    missed_clips: int


class PeerComparison(BaseModel):
    """Tolk and a peer on the same program, streamed one after the other."""

    url: str
    tolk: TranscriptQuality
    peer: TranscriptQuality


class Report(BaseModel):
    url: str
    started_at: str
    machine: dict[str, str | int]
    scenario: dict[str, str | int | float | list[str] | list[int]]
    levels: list[Level]
    capacity_sessions: int = Field(
        description=f"Most sessions with p95 first audio under {CAPACITY_LIMIT_S} s."
    )
    baseline: Baseline | None = None
    overhead: Overhead | None = None
    peer: PeerComparison | None = None
    load_periods: list[LoadPeriod] = Field(default_factory=list)
    replicas: list[ReplicaCount] = Field(
        default_factory=list, description="Polled through the run and the cool-down."
    )
    scaling: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Running replicas per deployment: first, most and last polled.",
    )
    samples: list[dict[str, object]]


def scaling(replicas: list[ReplicaCount]) -> dict[str, dict[str, int]]:
    """First, largest and last count of running replicas of each deployment."""
    names = sorted({name for count in replicas for name in count.running})
    summary = {}
    for name in names:
        counts = [count.running.get(name, 0) for count in replicas]
        summary[name] = {"first": counts[0], "most": max(counts), "last": counts[-1]}
    return summary


def capacity(levels: list[Level]) -> int:
    """The largest load level whose p95 first-audio delay stays under the limit."""
    fitting = [
        level.sessions
        for level in levels
        if level.first_audio_delay_s.p95 is not None
        and level.first_audio_delay_s.p95 < CAPACITY_LIMIT_S
        and not level.errors
    ]
    return max(fitting, default=0)


def write_plots(report: Report, folder: Path, samples: list[dict[str, object]]) -> None:
    """latency_distribution.png, latency_vs_sessions.png and, when replicas
    were polled, replicas_over_time.png in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for key, label in (
        ("partial", "partial transcript"),
        ("final_delay_s", "final transcript"),
        ("first_audio_delay_s", "first translated audio"),
    ):
        values = sorted(_sample_values(samples, key))
        if values:
            shares = [(i + 1) / len(values) for i in range(len(values))]
            # Markers too: a single sample draws no step.
            axes.step(
                values,
                shares,
                where="post",
                marker="o",
                markersize=3,
                label=f"{label} (n={len(values)})",
            )
    axes.axvline(CAPACITY_LIMIT_S, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("delay after the words were spoken (s)")
    axes.set_ylabel("share of utterances (words for partials)")
    axes.set_title("Latency distribution, all load levels")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(folder / "latency_distribution.png", dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(8, 4.5))
    sessions = [level.sessions for level in report.levels]
    for attribute, label in (
        ("final_delay_s", "final transcript"),
        ("first_audio_delay_s", "first translated audio"),
    ):
        spreads = [getattr(level, attribute) for level in report.levels]
        axes.plot(sessions, [s.p50 for s in spreads], marker="o", label=f"{label} p50")
        axes.plot(
            sessions,
            [s.p95 for s in spreads],
            marker="^",
            linestyle="--",
            label=f"{label} p95",
        )
    axes.axhline(CAPACITY_LIMIT_S, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("concurrent sessions")
    axes.set_ylabel("delay after end of speech (s)")
    axes.set_xticks(sessions)
    axes.set_title("Latency against load")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(folder / "latency_vs_sessions.png", dpi=120)
    plt.close(figure)

    if report.replicas:
        _plot_replicas(report, folder / "replicas_over_time.png")


def _plot_replicas(report: Report, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    names = sorted({name for count in report.replicas for name in count.running})
    times = [count.at_s for count in report.replicas]
    for offset, name in enumerate(names):
        running = [count.running.get(name, 0) for count in report.replicas]
        # Nudged apart, so that deployments with equal counts stay visible.
        nudge = (offset - (len(names) - 1) / 2) * 0.03
        axes.step(times, [n + nudge for n in running], where="post", label=name)
    for period in report.load_periods:
        axes.axvspan(period.start_s, period.end_s, color="orange", alpha=0.12)
        axes.annotate(
            f"{period.sessions} session" + ("" if period.sessions == 1 else "s"),
            ((period.start_s + period.end_s) / 2, 0.05),
            xycoords=("data", "axes fraction"),
            ha="center",
            fontsize=8,
        )
    axes.set_xlabel("time since the start of the run (s)")
    axes.set_ylabel("running replicas")
    axes.set_title("Replicas under load (shaded) and after it")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _sample_values(samples: list[dict[str, object]], key: str) -> list[float]:
    if key == "partial":
        return [
            float(d)
            for s in samples
            for d in s["partial_delays_s"]  # type: ignore[attr-defined]
        ]
    return [float(s[key]) for s in samples if s.get(key) is not None]  # type: ignore[arg-type]


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ordered list."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]
