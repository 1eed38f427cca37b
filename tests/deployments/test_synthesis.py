"""Speech synthesis backends and voice choice, read back by the recognizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pydantic
import pytest

from deployments.errors import (
    BackendUnavailable,
    UnknownVoice,
    UnspeakableText,
    UnsupportedLanguage,
)
from deployments.recognition import SpeechRecognizer
from deployments.schema import Speech
from deployments.synthesis.espeak import EspeakOptions
from deployments.synthesis.kokoro import KokoroBackend, KokoroOptions
from deployments.synthesis.voices import (
    SpeechSynthesizer,
    SynthesizerSettings,
    VoiceChoice,
)
from tests.deployments.helpers import read_back, word_recall

SENTENCES = {
    "en": "The train leaves the station at eight in the morning.",
    "es": "Me gustaría reservar una mesa para dos personas esta noche.",
    "pt": "A reunião de amanhã foi cancelada por causa da chuva.",
}


def _samples(speech: Speech) -> np.ndarray:
    return np.frombuffer(speech.pcm16, dtype="<i2")


def _assert_audible(speech: Speech) -> None:
    samples = _samples(speech).astype(np.float32) / 32767
    assert 1.0 < speech.duration_s < 10.0
    assert np.sqrt(np.mean(samples**2)) > 0.02


@pytest.mark.parametrize(
    ("language", "backend"), [("en", "piper"), ("es", "kokoro"), ("pt", "kokoro")]
)
def test_default_voices_are_read_back(
    speech_synthesizer: SpeechSynthesizer,
    stage_recognizer: SpeechRecognizer,
    language: str,
    backend: str,
) -> None:
    sentence = SENTENCES[language]

    speech = speech_synthesizer.synthesize(sentence, language)

    assert (speech.backend, speech.language) == (backend, language)
    _assert_audible(speech)
    assert speech.compute_s > 0
    heard = read_back(stage_recognizer, _samples(speech), speech.sample_rate, language)
    assert word_recall(sentence, heard) >= 0.5


def test_other_languages_fall_to_espeak(
    speech_synthesizer: SpeechSynthesizer,
) -> None:
    speech = speech_synthesizer.synthesize("Guten Morgen.", "de")
    assert (speech.backend, speech.voice) == ("espeak", "de")


def test_espeak_is_read_back(stage_recognizer: SpeechRecognizer) -> None:
    synthesizer = SpeechSynthesizer(
        SynthesizerSettings(voices={"en": VoiceChoice(backend="espeak")})
    )

    speech = synthesizer.synthesize(SENTENCES["en"], "en")

    _assert_audible(speech)
    assert (speech.sample_rate, speech.voice) == (22_050, "en-us")
    heard = read_back(stage_recognizer, _samples(speech), speech.sample_rate, "en")
    assert word_recall(SENTENCES["en"], heard) >= 0.5


def test_languages_cover_defaults_and_espeak(
    speech_synthesizer: SpeechSynthesizer,
) -> None:
    languages = speech_synthesizer.languages()
    assert {"en", "es", "pt", "de", "fr", "zh"} <= set(languages)
    assert "*" not in languages
    assert languages == sorted(languages)


def test_unknown_language_is_refused(speech_synthesizer: SpeechSynthesizer) -> None:
    with pytest.raises(UnsupportedLanguage) as caught:
        speech_synthesizer.synthesize("text", "xx")
    assert caught.value.language == "xx"


@pytest.mark.parametrize("text", ["  ", "♪", "♪ ♪ ...", "?!"])
def test_text_without_words_gives_empty_speech(
    speech_synthesizer: SpeechSynthesizer, text: str
) -> None:
    speech = speech_synthesizer.synthesize(text, "es")
    assert speech.pcm16 == b""
    assert speech.backend == "kokoro"


def test_text_a_voice_rejects_is_the_request_s_fault() -> None:
    kokoro = KokoroBackend(KokoroOptions())
    # An Arabic number sign alone: espeak-ng gives Kokoro no phonemes for it.
    with pytest.raises(UnspeakableText):
        kokoro.synthesize("\u0600", "es", "jf_gongitsune")


def test_output_is_resampled_when_asked() -> None:
    synthesizer = SpeechSynthesizer(
        SynthesizerSettings(
            voices={"*": VoiceChoice(backend="espeak")}, sample_rate=16_000
        )
    )
    native = SpeechSynthesizer(
        SynthesizerSettings(voices={"*": VoiceChoice(backend="espeak")})
    )

    speech = synthesizer.synthesize("Buenos días a todos.", "es")
    reference = native.synthesize("Buenos días a todos.", "es")

    assert speech.sample_rate == 16_000
    assert speech.duration_s == pytest.approx(reference.duration_s, abs=0.01)


def test_speed_changes_the_pace() -> None:
    def duration(speed: float) -> float:
        settings = SynthesizerSettings(
            voices={"es": VoiceChoice(backend="espeak", speed=speed)}
        )
        return (
            SpeechSynthesizer(settings)
            .synthesize("Buenos días a todos.", "es")
            .duration_s
        )

    assert duration(1.5) < duration(1.0) * 0.8


def test_unavailable_backend_falls_back_to_the_wildcard() -> None:
    settings = SynthesizerSettings(
        voices={
            "es": VoiceChoice(backend="espeak"),
            "*": VoiceChoice(backend="espeak"),
        },
        espeak=EspeakOptions(binary="no-such-espeak"),
    )
    synthesizer = SpeechSynthesizer(settings)

    assert synthesizer.languages() == []
    with pytest.raises(UnsupportedLanguage):
        synthesizer.synthesize("Hola.", "es")


def test_missing_kokoro_model_falls_back_to_espeak(tmp_path: Path) -> None:
    settings = SynthesizerSettings(
        voices={
            "es": VoiceChoice(backend="kokoro"),
            "*": VoiceChoice(backend="espeak"),
        },
        kokoro=KokoroOptions(model_path=str(tmp_path / "missing.onnx")),
    )

    speech = SpeechSynthesizer(settings).synthesize("Hola.", "es")

    assert speech.backend == "espeak"


def test_unknown_voice_is_rejected() -> None:
    settings = SynthesizerSettings(
        voices={"es": VoiceChoice(backend="espeak", voice="nope")}
    )
    with pytest.raises(UnknownVoice) as caught:
        SpeechSynthesizer(settings)
    assert caught.value.voice == "nope"


def test_language_the_backend_cannot_speak_is_rejected(
    speech_synthesizer: SpeechSynthesizer,
) -> None:
    settings = SynthesizerSettings(voices={"es": VoiceChoice(backend="piper")})
    with pytest.raises(UnsupportedLanguage, match="piper"):
        speech_synthesizer.apply(settings)
    # The failed apply left the previous voices in place.
    assert speech_synthesizer.synthesize(" ", "es").backend == "kokoro"


@pytest.mark.parametrize(
    "settings",
    [
        {"voice": {"es": {"backend": "espeak"}}},
        {"voices": {"es": {"backend": "coqui"}}},
        {"voices": {"es": {"backend": "espeak", "pitch": 2}}},
        {"voices": {"es": {"backend": "espeak", "speed": 3.0}}},
        {"voices": {"Spanish": {"backend": "espeak"}}},
        {"kokoro": {"model": "x.onnx"}},
    ],
    ids=["unknown-key", "unknown-backend", "unknown-voice-key", "speed", "code", "opt"],
)
def test_settings_reject_invalid_values(settings: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        SynthesizerSettings.model_validate(settings)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="this onnxruntime has CUDA",
)
def test_cuda_voice_without_onnxruntime_gpu_is_refused_clearly() -> None:
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        KokoroBackend(KokoroOptions(device="cuda"))
