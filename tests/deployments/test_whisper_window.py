"""Whisper's encoder window cut to the audio."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest

from deployments.recognition import SpeechRecognizer, TranscriberSettings
from deployments.schema import TranscriptionRequest
from deployments.whisper_window import WindowedWhisper, cut_window
from tests.deployments.helpers import load_clip, words


def _padded(content: int, frames: int = 3000, batch: bool = False) -> np.ndarray:
    features = np.zeros((80, frames), dtype=np.float32)
    features[:, :content] = -0.5
    return features[np.newaxis] if batch else features


@pytest.mark.parametrize(
    ("content", "margin_s", "window"),
    [
        (250, 5.0, 800),
        (300, 5.0, 800),
        (301, 5.0, 900),
        (2800, 5.0, 3000),
        (250, 0, 300),
    ],
)
def test_window_keeps_the_audio_and_its_margin(
    content: int, margin_s: float, window: int
) -> None:
    assert cut_window(_padded(content), margin_s).shape == (80, window)
    assert cut_window(_padded(content, batch=True), margin_s).shape == (1, 80, window)


def test_window_stays_whole_without_a_margin_or_padding() -> None:
    assert cut_window(_padded(250), None).shape == (80, 3000)
    assert cut_window(_padded(3000), 5.0).shape == (80, 3000)


def test_window_of_silence_starts_at_the_first_frame() -> None:
    # Zero audio has a log-mel floor, not zeros; all-zero features are padding.
    assert cut_window(np.zeros((80, 3000), dtype=np.float32), 1.0).shape == (80, 100)


def test_short_window_reads_like_the_full_one(
    audio_dir: Path, references: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recognizer = SpeechRecognizer(TranscriberSettings(model="whisper-tiny.en"))
    encoded: list[int] = []
    encode = WindowedWhisper.encode

    def counting(model: WindowedWhisper, features: np.ndarray) -> object:
        encoded.append(cut_window(features, model.margin_s).shape[-1])
        return encode(model, features)

    monkeypatch.setattr(WindowedWhisper, "encode", counting)
    audio = load_clip(audio_dir, "LJ001-0002.wav")
    reference = " ".join(words(references["LJ001-0002.wav"]))

    def heard(margin_s: float | None) -> str:
        recognizer.apply(
            TranscriberSettings(model="whisper-tiny.en", window_margin_s=margin_s)
        )
        text = recognizer.transcribe(TranscriptionRequest(audio=audio, language="en"))
        return " ".join(words(text.text))

    full, short = heard(None), heard(10.0)

    assert jiwer.wer(reference, short) <= jiwer.wer(reference, full) + 0.05
    # The clip lasts under 2 s: 12 s of window instead of 30.
    assert encoded[0] == 3000
    assert set(encoded[1:]) == {1200}
