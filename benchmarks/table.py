"""Prints the README's results tables from a benchmarks/run.sh output folder.

.venv/bin/python benchmarks/table.py benchmarks/results/latest
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.bench.report import Level, Report, Spread


def _spread(spread: Spread) -> str:
    if spread.p50 is None or spread.p95 is None:
        return "n/a"
    return f"{spread.p50:.2f} / {spread.p95:.2f}"


def _levels(title: str, report: Report) -> list[str]:
    lines = [
        f"**{title}** (p50 / p95, seconds)",
        "",
        "| sessions | partial | final | first audio | ASR CPU/s | MT CPU/s "
        "| TTS CPU/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in report.levels:
        cpu = level.cpu_s_per_speech_s or {}
        lines.append(
            f"| {level.sessions} | {_spread(level.partial_delay_s)} "
            f"| {_spread(level.final_delay_s)} "
            f"| {_spread(level.first_audio_delay_s)} "
            f"| {cpu.get('transcription', 0):.2f} | {cpu.get('translation', 0):.2f} "
            f"| {cpu.get('synthesis', 0):.2f} |"
        )
    lines += ["", f"Capacity (p95 first audio < 3 s): {report.capacity_sessions}", ""]
    return lines


def _against_baseline(report: Report) -> list[str]:
    if not (report.baseline and report.overhead and report.levels):
        return []
    first, baseline, overhead = report.levels[0], report.baseline, report.overhead
    rows = [
        ("final", first.final_delay_s, baseline.final_delay_s, overhead.final_delay_s),
        (
            "first audio",
            first.first_audio_delay_s,
            baseline.first_audio_delay_s,
            overhead.first_audio_delay_s,
        ),
        (
            "recognizer compute, per final",
            first.asr_compute_s,
            baseline.asr_compute_s,
            overhead.asr_compute_s,
        ),
    ]
    lines = [
        "| one session | Tolk | in-process baseline | difference (paired median) |",
        "|---|---|---|---|",
    ]
    for name, ours, theirs, difference in rows:
        shown = "n/a" if difference is None else f"{difference:+.3f}"
        lines.append(f"| {name} | {_spread(ours)} | {_spread(theirs)} | {shown} |")
    return [*lines, "", *_first_audio_parts(first), ""]


def _first_audio_parts(level: Level) -> list[str]:
    """What one session's first audio is made of, p50 by p50."""
    parts = (
        level.final_delay_s.p50,
        level.mt_compute_s.p50,
        level.first_segment_compute_s.p50,
        level.first_audio_delay_s.p50,
    )
    if any(part is None for part in parts):
        return []
    final, translation, segment, first_audio = parts
    return [
        f"First audio, one session, p50: final {final:.2f} s + translation "
        f"{translation:.2f} s + the first segment's speech {segment:.2f} s; "
        f"first audio {first_audio:.2f} s. The rest (waiting for the voice to "
        f"finish earlier speech, and the path): {_spread(level.first_audio_wait_s)} "
        "s, p50 / p95."
    ]


def _against_peer(report: Report) -> list[str]:
    if not report.peer:
        return []
    lines = [
        "| same program | final delay | word error rate | clips missed |",
        "|---|---|---|---|",
    ]
    for quality in (report.peer.tolk, report.peer.peer):
        rate = quality.word_error_rate
        lines.append(
            f"| {quality.system} | {_spread(quality.final_delay_s)} "
            f"| {'n/a' if rate is None else f'{rate:.1%}'} | {quality.missed_clips} |"
        )
    return [*lines, ""]


def _resumes(report: Report) -> list[str]:
    level = report.levels[0]
    missed = level.resume_missed_events
    return [
        f"Resume ({level.resume_s.count} reconnections, up to "
        f"{missed.max or 0:.0f} missed events, p95 {missed.p95 or 0:.0f}): "
        f"{_spread(level.resume_s)} s, p50 / p95; "
        f"event ids exact: {level.event_ids_exact}",
        "",
    ]


def main(folder: Path) -> None:
    """Tables of a run.sh folder, or of one `tolk bench --out` folder."""
    lines: list[str] = []
    single = folder / "report.json"
    if single.exists():
        report = Report.model_validate_json(single.read_text())
        lines += _levels(str(folder), report)
        lines += _against_baseline(report)
        lines += _against_peer(report)
    for scenario, title in (
        ("load", "Default models"),
        ("espeak", "espeak-ng as the Portuguese voice"),
    ):
        path = folder / scenario / "report.json"
        if path.exists():
            report = Report.model_validate_json(path.read_text())
            lines += _levels(title, report)
            lines += _against_baseline(report)
            lines += _against_peer(report)
    for scenario in ("resume", "resume-long"):
        resume = folder / scenario / "report.json"
        if resume.exists():
            lines += _resumes(Report.model_validate_json(resume.read_text()))
    scaling = folder / "autoscaling" / "report.json"
    if scaling.exists():
        report = Report.model_validate_json(scaling.read_text())
        lines.append("| deployment | replicas at start | most | at the end |")
        lines.append("|---|---|---|---|")
        for name, counts in report.scaling.items():
            lines.append(
                f"| {name} | {counts['first']} | {counts['most']} | {counts['last']} |"
            )
    hops = folder / "hops.json"
    if hops.exists():
        lines += ["", *_hops(json.loads(hops.read_text()))]
    print("\n".join(lines))


_HOPS = {
    "websocket_echo_uvicorn": "WebSocket message and echo, plain uvicorn",
    "websocket_echo_serve_proxy": "the same through Serve's proxy",
    "handle_call_empty": "deployment handle call, no payload",
    "handle_call_4s_float32": "deployment handle call, 4 s of float32 audio",
    "handle_call_4s_int16": "deployment handle call, 4 s of int16 audio",
}


def _hops(figures: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| one hop, idle machine | p50 ms | p95 ms |", "|---|---|---|"]
    for name, title in _HOPS.items():
        if name in figures:
            hop = figures[name]
            lines.append(f"| {title} | {hop['p50_ms']:.1f} | {hop['p95_ms']:.1f} |")
    return lines


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/latest"))
