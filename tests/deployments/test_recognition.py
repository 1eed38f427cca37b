"""Speech recognition with the packaged Whisper base, in process."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pydantic
import pytest

from deployments.errors import InvalidAudio, ModelUnavailable, UnsupportedLanguage
from deployments.recognition import SpeechRecognizer, TranscriberSettings
from deployments.schema import ASR_SAMPLE_RATE, TranscriptionRequest
from tests.deployments.helpers import load_clip, words


def _wer(reference: str, heard: str) -> float:
    return jiwer.wer(" ".join(words(reference)), " ".join(words(heard)))


@pytest.mark.parametrize("partial", [False, True], ids=["final", "partial"])
def test_transcribe_reads_real_speech(
    stage_recognizer: SpeechRecognizer,
    audio_dir: Path,
    references: dict[str, str],
    partial: bool,
) -> None:
    audio = load_clip(audio_dir, "LJ001-0001.wav")

    transcript = stage_recognizer.transcribe(
        TranscriptionRequest(audio=audio, partial=partial)
    )

    assert _wer(references["LJ001-0001.wav"], transcript.text) < 0.15
    assert transcript.language == "en"
    assert transcript.compute_s > 0
    assert transcript.segments
    assert transcript.segments[-1].end_s <= len(audio) / ASR_SAMPLE_RATE + 0.5


def test_transcribe_uses_language_and_prompt(
    stage_recognizer: SpeechRecognizer, audio_dir: Path, references: dict[str, str]
) -> None:
    request = TranscriptionRequest(
        audio=load_clip(audio_dir, "LJ001-0002.wav"),
        language="en",
        prompt=references["LJ001-0001.wav"],
    )

    transcript = stage_recognizer.transcribe(request)

    assert _wer(references["LJ001-0002.wav"], transcript.text) < 0.15
    assert transcript.language == "en"


@pytest.mark.parametrize("level", [0.0, 0.01, 0.1], ids=["zeros", "quiet", "loud"])
def test_transcribe_hears_nothing_in_silence_and_noise(
    stage_recognizer: SpeechRecognizer, level: float
) -> None:
    noise = np.random.default_rng(0).standard_normal(2 * ASR_SAMPLE_RATE) * level

    transcript = stage_recognizer.transcribe(
        TranscriptionRequest(audio=noise.astype(np.float32), language="en")
    )

    assert transcript.text == ""
    assert transcript.segments == []


def test_transcribe_accepts_empty_audio(stage_recognizer: SpeechRecognizer) -> None:
    request = TranscriptionRequest(audio=np.zeros(0, np.float32), language="en")
    assert stage_recognizer.transcribe(request).text == ""


def test_transcribe_rejects_stereo_audio(stage_recognizer: SpeechRecognizer) -> None:
    request = TranscriptionRequest(audio=np.zeros((2, 1600), np.float32))
    with pytest.raises(InvalidAudio, match="one channel"):
        stage_recognizer.transcribe(request)


def test_transcribe_rejects_an_unknown_language(
    stage_recognizer: SpeechRecognizer,
) -> None:
    request = TranscriptionRequest(audio=np.zeros(1600, np.float32), language="xx")
    with pytest.raises(UnsupportedLanguage) as caught:
        stage_recognizer.transcribe(request)
    assert caught.value.language == "xx"


def test_languages_are_multilingual(stage_recognizer: SpeechRecognizer) -> None:
    assert {"en", "es", "pt", "fr", "de"} <= set(stage_recognizer.languages())


def test_settings_reject_unknown_keys() -> None:
    with pytest.raises(pydantic.ValidationError, match="beam_width"):
        TranscriberSettings.model_validate({"beam_width": 3})


def test_settings_reject_bad_values() -> None:
    with pytest.raises(pydantic.ValidationError):
        TranscriberSettings.model_validate({"device": "tpu"})
    with pytest.raises(pydantic.ValidationError):
        TranscriberSettings.model_validate({"beam_size": 0})


def test_apply_reloads_only_when_a_load_field_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[tuple[str, TranscriberSettings]] = []

    def load(reference: str, settings: TranscriberSettings) -> None:
        loads.append((reference, settings))

    monkeypatch.setattr(SpeechRecognizer, "_load", staticmethod(load))
    recognizer = SpeechRecognizer(TranscriberSettings())

    recognizer.apply(TranscriberSettings(beam_size=2, no_speech_threshold=0.5))
    assert len(loads) == 1
    assert recognizer.settings.beam_size == 2

    recognizer.apply(TranscriberSettings(beam_size=2, compute_type="float32"))
    assert len(loads) == 2
    assert loads[-1][1].compute_type == "float32"

    # A partial model loads on its own; the main model stays.
    recognizer.apply(
        TranscriberSettings(compute_type="float32", partial_model="whisper-tiny.en")
    )
    assert [reference for reference, _ in loads[2:]] == ["whisper-tiny.en"]


def test_unloadable_model_is_reported(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-model")
    with pytest.raises(ModelUnavailable) as caught:
        SpeechRecognizer(TranscriberSettings(model=missing))
    assert caught.value.reference == missing


def test_partial_model_does_the_partials_of_its_languages(
    audio_dir: Path, references: dict[str, str]
) -> None:
    recognizer = SpeechRecognizer(
        TranscriberSettings(model="whisper-base", partial_model="whisper-tiny.en")
    )
    audio = load_clip(audio_dir, "LJ001-0002.wav")

    def heard(language: str | None, partial: bool) -> str:
        request = TranscriptionRequest(audio=audio, language=language, partial=partial)
        transcript = recognizer.transcribe(request)
        assert _wer(references["LJ001-0002.wav"], transcript.text) < 0.2
        return transcript.model

    assert heard("en", partial=True) == "whisper-tiny.en"
    assert heard("en", partial=False) == "whisper-base"
    # Without a language the English-only model cannot be told it applies.
    assert heard(None, partial=True) == "whisper-base"

    # Finals too when asked; languages it does not know stay with `model`.
    recognizer.apply(
        TranscriberSettings(
            model="whisper-base",
            partial_model="whisper-tiny.en",
            partial_model_finals=True,
        )
    )
    assert heard("en", partial=False) == "whisper-tiny.en"
    assert heard(None, partial=False) == "whisper-base"

    recognizer.apply(TranscriberSettings(model="whisper-base"))
    assert heard("en", partial=True) == "whisper-base"
