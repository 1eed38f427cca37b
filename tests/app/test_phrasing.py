"""Cutting translations into segments of speech."""

from __future__ import annotations

import pytest

from app.phrasing import PhrasingConfig, speech_segments

SENTENCE = (
    "A impressão, no único sentido com que estamos atualmente preocupados, "
    "difere da maioria, se não de todas as artes e ofícios representados na "
    "Exposição."
)


def test_segments_join_back_into_the_text() -> None:
    segments = speech_segments(SENTENCE)

    assert len(segments) > 1
    assert " ".join(segments) == " ".join(SENTENCE.split())


def test_first_segment_is_short_and_ends_a_clause_where_it_can() -> None:
    segments = speech_segments(SENTENCE)

    assert segments[0] == "A impressão,"
    assert all(segment.endswith((",", ".")) for segment in segments)


def test_a_long_first_clause_is_cut_at_the_first_share() -> None:
    text = "Printing in the only sense with which we are concerned differs."

    segments = speech_segments(text, PhrasingConfig(first_words=3))

    assert segments[0] == "Printing in the"


@pytest.mark.parametrize("growth", [1.0, 1.5, 2.0])
def test_later_segments_grow_up_to_the_limit(growth: float) -> None:
    text = " ".join(f"w{n}" for n in range(200))
    config = PhrasingConfig(first_words=4, growth=growth, max_words=30)

    sizes = [len(segment.split()) for segment in speech_segments(text, config)]

    assert sum(sizes) == 200
    assert sizes[0] == 4
    # All but the last, which holds what is left.
    assert sizes[:-1] == sorted(sizes[:-1])
    assert max(sizes) <= 30


def test_short_and_empty_texts() -> None:
    assert speech_segments("Olá.") == ["Olá."]
    assert speech_segments("  ") == []
    assert speech_segments("") == []


def test_the_same_text_gives_the_same_segments() -> None:
    assert speech_segments(SENTENCE) == speech_segments(SENTENCE)
