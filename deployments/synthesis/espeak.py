"""Formant speech from the espeak-ng command line tool: robotic, instant, broad."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess

import numpy as np
import soundfile
from pydantic import BaseModel, ConfigDict, Field

from deployments.errors import BackendFailed, BackendUnavailable, UnsupportedLanguage
from deployments.synthesis.backend import SynthesisBackend
from deployments.synthesis.languages import espeak_languages, espeak_voice_for

logger = logging.getLogger("tolk.stage.tts")

_WORDS_PER_MINUTE = 175
_SAMPLE_RATE = 22_050
# espeak-ng's accepted speaking rates, in words per minute.
_RATE_RANGE = (80, 450)


class EspeakOptions(BaseModel):
    """Where espeak-ng is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    binary: str = Field("espeak-ng", description="the espeak-ng executable")
    timeout_s: float = Field(20.0, gt=0.0, description="limit for one text")


class EspeakBackend(SynthesisBackend):
    """Runs `espeak-ng --stdout` per text and decodes the WAV it writes."""

    name = "espeak"

    def __init__(self, options: EspeakOptions) -> None:
        binary = shutil.which(options.binary)
        if binary is None:
            raise BackendUnavailable(
                self.name,
                f"{options.binary!r} is not on PATH; install the Debian package "
                "'espeak-ng'",
            )
        self._binary = binary
        self._timeout_s = options.timeout_s
        self._voices = self._list_voices()
        self._languages = espeak_languages(self._voices)
        self.sample_rate = _SAMPLE_RATE
        logger.info("espeak-ng has %d voices", len(self._voices))

    def languages(self) -> set[str]:
        """Every language one of the installed voices speaks."""
        return set(self._languages)

    def voices(self) -> set[str]:
        """espeak-ng voice codes, such as 'pt' or 'en-gb'."""
        return set(self._voices)

    def default_voice(self, language: str) -> str:
        """The preferred variant of the language (Brazilian for 'pt').

        Raises:
            UnsupportedLanguage: no installed voice speaks the language.
        """
        voice = espeak_voice_for(language, self._voices)
        if voice is None:
            raise UnsupportedLanguage(language, "espeak-ng", sorted(self._languages))
        return voice

    def synthesize(
        self, text: str, language: str, voice: str, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak `text` at espeak-ng's rate (22,050 Hz)."""
        rate = int(np.clip(_WORDS_PER_MINUTE * speed, *_RATE_RANGE))
        try:
            completed = subprocess.run(
                # Text goes through stdin so that none of it reads as an option.
                [self._binary, "-v", voice, "-s", str(rate), "-b", "1", "--stdout"],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=self._timeout_s,
                check=True,
            )
            audio, sample_rate = soundfile.read(
                io.BytesIO(completed.stdout), dtype="int16"
            )
        except subprocess.TimeoutExpired as error:
            raise BackendFailed(self.name, "timed out") from error
        except (
            subprocess.CalledProcessError,
            OSError,
            soundfile.LibsndfileError,
        ) as error:
            raise BackendFailed(self.name, str(error)) from error
        return audio, sample_rate

    def _list_voices(self) -> set[str]:
        try:
            listing = subprocess.run(
                [self._binary, "--voices"],
                capture_output=True,
                text=True,
                timeout=self._timeout_s,
                check=True,
            ).stdout
        except (subprocess.SubprocessError, OSError) as error:
            raise BackendUnavailable(
                self.name, f"cannot list voices: {error}"
            ) from error
        # Rows are "priority language gender name file ..." under a header.
        return {
            row.split()[1] for row in listing.splitlines()[1:] if len(row.split()) > 1
        }
