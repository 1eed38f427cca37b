"""Stage fixtures: each real model loads once per test session, in process."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from deployments.recognition import SpeechRecognizer
from deployments.synthesis.voices import SpeechSynthesizer
from deployments.translation.routing import TextTranslator


@pytest.fixture(scope="session")
def stage_recognizer() -> SpeechRecognizer:
    return SpeechRecognizer()


@pytest.fixture(scope="session")
def text_translator() -> TextTranslator:
    return TextTranslator()


@pytest.fixture(scope="session")
def speech_synthesizer() -> SpeechSynthesizer:
    return SpeechSynthesizer()


@pytest.fixture(scope="session")
def references(audio_dir: Path) -> dict[str, str]:
    with open(audio_dir / "references.tsv", encoding="utf-8", newline="") as handle:
        return {
            row["clip"]: row["text"] for row in csv.DictReader(handle, delimiter="\t")
        }
