"""`tolk bench` runs against the service and writes a report that reads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.bench.report import Report
from app.cli import cli

pytestmark = pytest.mark.service

CLIP = "LJ001-0002.wav"


def test_bench_writes_a_valid_report(
    service_url: str, audio_dir: Path, tmp_path: Path
) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / CLIP).symlink_to(audio_dir / CLIP)
    out = tmp_path / "results"

    result = CliRunner().invoke(
        cli,
        [
            "bench",
            service_url,
            "--clips-dir",
            str(clips),
            "--clips-per-session",
            "2",
            "--sessions",
            "1,2",
            "--baseline",
            "--poll-replicas-s",
            "0.5",
            "--cooldown-s",
            "1",
            "--out",
            str(out),
        ],
    )

    assert result.exit_code == 0, result.output
    report = Report.model_validate_json((out / "report.json").read_text())
    assert [level.sessions for level in report.levels] == [1, 2]
    first = report.levels[0]
    assert first.utterances == 2 and first.event_ids_exact and not first.errors
    assert first.final_delay_s.p50 is not None and first.final_delay_s.p50 > 0
    assert first.first_audio_delay_s.count == 2
    # Read from the stage replicas: partial passes and the voice are counted.
    assert first.cpu_s_per_speech_s is not None
    assert first.cpu_s_per_speech_s["transcription"] > 0
    assert first.cpu_s_per_speech_s["synthesis"] > 0
    assert report.baseline is not None and report.baseline.utterances == 2
    assert first.first_segment_compute_s.count == 2
    # The service and the baseline cut the program into the same utterances.
    assert report.overhead is not None and report.overhead.paired_utterances == 2
    assert report.overhead.final_delay_s is not None
    assert report.overhead.asr_compute_s is not None
    assert report.baseline.asr_compute_s.count == 2
    assert report.machine["cpu"]
    assert [period.sessions for period in report.load_periods] == [1, 2]
    assert report.replicas and report.replicas[-1].at_s > report.load_periods[-1].end_s
    assert report.scaling["Ingress"]["most"] == 2
    assert report.scaling["Transcriber"]["first"] >= 1
    for plot in (
        "latency_distribution.png",
        "latency_vs_sessions.png",
        "replicas_over_time.png",
    ):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
