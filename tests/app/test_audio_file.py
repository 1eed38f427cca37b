"""Sound files `tolk translate` streams, and the speech it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from app.audio_file import read_pcm16, write_wav


@pytest.mark.parametrize(
    ("suffix", "format"),
    [(".wav", "WAV"), (".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3")],
)
def test_read_pcm16_decodes_common_formats(
    tmp_path: Path, audio_dir: Path, suffix: str, format: str
) -> None:
    speech, rate = soundfile.read(audio_dir / "LJ001-0002.wav")
    path = tmp_path / f"clip{suffix}"
    soundfile.write(path, np.stack([speech, speech], axis=1), rate, format=format)

    pcm, read_rate = read_pcm16(path)

    assert read_rate == rate
    assert abs(len(pcm) / 2 - len(speech)) < rate * 0.1


def test_write_wav_joins_chunks_at_the_first_rate(tmp_path: Path) -> None:
    second = np.full(24_000, 1000, dtype="<i2").tobytes()
    half = np.full(11_025, 1000, dtype="<i2").tobytes()

    seconds = write_wav(tmp_path / "out.wav", [(24_000, second), (22_050, half)])

    assert seconds == pytest.approx(1.5, abs=0.01)
    assert soundfile.info(tmp_path / "out.wav").samplerate == 24_000
