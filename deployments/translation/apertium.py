"""Rule-based translation with the Apertium command line tool."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from typing import Literal

from pydantic import Field

from deployments.errors import BackendFailed, BackendUnavailable
from deployments.translation.backend import BackendOptions, TranslationBackend

logger = logging.getLogger("tolk.stage.translation")

# Apertium names newer pairs with ISO 639-3 codes (eng-spa) and older ones
# with ISO 639-1 codes (fr-es); both are mapped to ISO 639-1.
_ISO_639_1 = {
    "afr": "af", "arg": "an", "ara": "ar", "bel": "be", "bul": "bg",
    "bre": "br", "cat": "ca", "ces": "cs", "cym": "cy", "dan": "da",
    "deu": "de", "ell": "el", "eng": "en", "epo": "eo", "spa": "es",
    "est": "et", "eus": "eu", "fin": "fi", "fra": "fr", "gle": "ga",
    "glg": "gl", "heb": "he", "hin": "hi", "hrv": "hr", "hun": "hu",
    "ind": "id", "isl": "is", "ita": "it", "kaz": "kk", "lit": "lt",
    "lav": "lv", "mkd": "mk", "mlt": "mt", "nld": "nl", "nno": "nn",
    "nob": "nb", "oci": "oc", "pol": "pl", "por": "pt", "ron": "ro",
    "rus": "ru", "slk": "sk", "slv": "sl", "sqi": "sq", "srp": "sr",
    "swe": "sv", "tat": "tt", "tur": "tr", "ukr": "uk", "urd": "ur",
}  # fmt: skip
_TWO_LETTER = re.compile(r"^[a-z]{2}$")
# Apertium marks unknown words with *, untranslatable forms with # and
# transfer gaps with @, each glued to the front of the word.
_MARKS = re.compile(r"[*#@](?=\w)")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")


class ApertiumOptions(BackendOptions):
    """Options of the Apertium backend."""

    name: Literal["apertium"] = "apertium"
    binary: str = Field("apertium", description="the apertium executable")
    timeout_s: float = Field(20.0, gt=0.0, description="limit for one batch")


class ApertiumBackend(TranslationBackend):
    """Translates through `apertium MODE`, one process per batch."""

    name = "apertium"

    def __init__(self, options: ApertiumOptions) -> None:
        binary = shutil.which(options.binary)
        if binary is None:
            raise BackendUnavailable(
                self.name,
                f"{options.binary!r} is not on PATH; install the Debian packages "
                "'apertium' and a language pair such as 'apertium-eng-spa'",
            )
        self._binary = binary
        self._timeout_s = options.timeout_s
        self._modes = _discover_modes(binary, options.timeout_s)
        if not self._modes:
            raise BackendUnavailable(
                self.name, "no language pair is installed, e.g. 'apertium-eng-spa'"
            )
        logger.info("apertium serves %d pairs", len(self._modes))

    def pairs(self) -> set[tuple[str, str]]:
        """Pairs of the installed Apertium language packages."""
        return set(self._modes)

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate the batch in one process, one paragraph per text."""
        # Limitation: every batch starts the pipeline anew, about 0.3 s of
        # loading dictionaries; under steady load a long-lived null-flush
        # process (`apertium -z`) would save that.
        paragraphs = [" ".join(text.split()) for text in texts]
        mode = self._modes[(source, target)]
        try:
            completed = subprocess.run(
                [self._binary, mode],
                # Blank lines keep texts apart; the "line" format would, too,
                # but it drops each line's final full stop.
                input="\n\n".join(paragraphs) + "\n",
                capture_output=True,
                text=True,
                timeout=self._timeout_s,
                check=True,
            )
        except subprocess.TimeoutExpired as error:
            raise BackendFailed(self.name, f"{mode} timed out") from error
        except (subprocess.CalledProcessError, OSError) as error:
            raise BackendFailed(self.name, f"{mode} failed: {error}") from error
        translated = _PARAGRAPH_BREAK.split(completed.stdout.strip("\n"))
        if len(translated) != len(paragraphs):
            raise BackendFailed(
                self.name,
                f"{mode} returned {len(translated)} texts for {len(paragraphs)}",
            )
        return [" ".join(_MARKS.sub("", text).split()) for text in translated]


def _discover_modes(binary: str, timeout_s: float) -> dict[tuple[str, str], str]:
    try:
        listed = subprocess.run(
            [binary, "-l"], capture_output=True, text=True, timeout=timeout_s
        ).stdout
    except (subprocess.TimeoutExpired, OSError) as error:
        raise BackendUnavailable("apertium", f"cannot list modes: {error}") from error
    modes: dict[tuple[str, str], str] = {}
    for mode in listed.split():
        pair = _mode_pair(mode)
        # Variants such as spa-eng_US are skipped in favour of the plain mode.
        if pair is not None:
            modes.setdefault(pair, mode)
    return modes


def _mode_pair(mode: str) -> tuple[str, str] | None:
    codes = mode.split("-")
    if len(codes) != 2:
        return None
    iso = [_iso_639_1(code) for code in codes]
    if iso[0] is None or iso[1] is None:
        return None
    return iso[0], iso[1]


def _iso_639_1(code: str) -> str | None:
    if _TWO_LETTER.match(code):
        return code
    return _ISO_639_1.get(code)
