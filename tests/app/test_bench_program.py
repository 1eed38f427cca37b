"""What benchmark sessions say, and the summaries of what they measured."""

from __future__ import annotations

import pytest

from app.bench.peer import FinalSegment, transcript_figures
from app.bench.program import Clip, build_program, clips_spoken
from app.bench.report import Baseline, ReplicaCount, Spread, TimedUtterance, scaling
from app.bench.runner import _overhead, _spent, summarize
from app.bench.session import SessionResult, UtteranceSample


def _clips(count: int) -> list[Clip]:
    return [Clip(f"c{n}.wav", bytes(3200), 16_000, "") for n in range(count)]


def test_only_the_clips_the_sessions_speak_are_used() -> None:
    clips = _clips(10)

    spoken = clips_spoken(clips, sessions=2, count=3)

    assert [clip.name for clip in spoken] == ["c0.wav", "c1.wav", "c2.wav", "c3.wav"]
    for offset in range(2):
        program = build_program(clips, 3, offset=offset)
        assert {span.clip.name for span in program.spans} <= {c.name for c in spoken}


def test_programs_wrap_around_the_clips() -> None:
    spoken = clips_spoken(_clips(3), sessions=2, count=5)

    assert len(spoken) == 3


def test_scaling_summarizes_each_deployment() -> None:
    counts = [
        ReplicaCount(at_s=0, running={"Transcriber": 1, "Ingress": 2}),
        ReplicaCount(at_s=2, running={"Transcriber": 2, "Ingress": 2}),
        ReplicaCount(at_s=4, running={"Transcriber": 1}),
    ]

    assert scaling(counts) == {
        "Ingress": {"first": 2, "most": 2, "last": 0},
        "Transcriber": {"first": 1, "most": 2, "last": 1},
    }


def test_finals_are_timed_from_the_end_of_each_clip() -> None:
    # Two 1 s clips, each followed by the program's pause.
    clips = [
        Clip("a.wav", bytes(32_000), 16_000, "Hello there."),
        Clip("b.wav", bytes(32_000), 16_000, "General Kenobi!"),
    ]
    program = build_program(clips, 2)
    second_end = program.spans[1].end / program.sample_rate
    finals = [
        FinalSegment(at_s=1.5, start_s=0.0, end_s=0.9, text="hello there"),
        FinalSegment(at_s=second_end + 0.7, start_s=2.3, end_s=3.1, text="general"),
    ]

    figures = transcript_figures(program, finals)

    assert figures.final_delays_s == pytest.approx([0.5, 0.7])
    assert figures.missed_clips == 0
    # One word of four is missing.
    assert figures.word_error_rate == 0.25


def test_a_clip_without_a_final_reaching_its_end_is_missed() -> None:
    clips = [Clip("a.wav", bytes(64_000), 16_000, "one two three")]
    program = build_program(clips, 1)

    figures = transcript_figures(
        program, [FinalSegment(at_s=1.0, start_s=0.0, end_s=0.8, text="one")]
    )

    assert figures.final_delays_s == []
    assert figures.missed_clips == 1


def test_stage_cpu_is_summed_over_replicas_between_readings() -> None:
    before = {"transcription": {"r1": 10.0}, "synthesis": {"s1": 2.0}}
    # r2 started during the level: counted from its start.
    after = {"transcription": {"r1": 14.0, "r2": 3.0}, "synthesis": {"s1": 2.5}}

    assert _spent(before, after) == {"transcription": 7.0, "synthesis": 0.5}
    assert _spent(None, after) is None


def _utterance(end_s: float, final_s: float, audio_s: float) -> UtteranceSample:
    return UtteranceSample(
        session=0,
        utterance=1,
        final_delay_s=final_s,
        first_audio_delay_s=audio_s,
        partial_delays_s=[],
        asr_compute_s=0.2,
        mt_compute_s=0.02,
        tts_compute_s=1.0,
        speech_s=2.0,
        speech_end_s=end_s,
        first_segment_compute_s=0.5,
    )


def test_overhead_pairs_the_same_utterances() -> None:
    """Each utterance is set against the baseline's, whatever its length."""
    session = SessionResult(
        0,
        utterances=[
            _utterance(3.0, 0.66, 1.40),
            _utterance(9.0, 0.90, 2.00),
            _utterance(15.0, 0.70, 4.00),
        ],
    )
    baseline = Baseline(
        utterances=3,
        final_delay_s=Spread(count=0),
        first_audio_delay_s=Spread(count=0),
        timed=[
            TimedUtterance(
                speech_end_s=3.0,
                final_delay_s=0.65,
                first_audio_delay_s=1.38,
                asr_compute_s=0.19,
            ),
            TimedUtterance(
                speech_end_s=9.0, final_delay_s=0.89, first_audio_delay_s=1.99
            ),
            # Not in Tolk's run: unpaired, left out.
            TimedUtterance(speech_end_s=12.0, final_delay_s=5.0),
        ],
    )
    level = summarize(1, [session])

    overhead = _overhead(level, session, baseline)

    assert overhead.paired_utterances == 2
    assert overhead.final_delay_s == pytest.approx(0.01)
    assert overhead.first_audio_delay_s == pytest.approx(0.015)
    # Only the utterance whose compute the baseline knows is set against it.
    assert overhead.asr_compute_s == pytest.approx(0.01)
    # What is left of first audio once its parts are taken out.
    assert level.first_audio_wait_s.p50 == pytest.approx(0.58)
