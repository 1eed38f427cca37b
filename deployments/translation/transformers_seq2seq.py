"""Neural translation with Hugging Face sequence-to-sequence models.

One backend holds one model. One-pair models (Marian opus-mt) translate the
pair named in the options or in their tokenizer; multilingual models (NLLB,
M2M100) translate between every language whose code token they know, and
are told the languages through `src_lang` and the forced first token.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Literal

from pydantic import Field

from deployments.errors import BackendFailed, BackendUnavailable
from deployments.translation.backend import BackendOptions, TranslationBackend

logger = logging.getLogger("tolk.stage.translation")

# FLORES-200 codes that NLLB uses, for the ISO 639-1 codes the rest of Tolk
# speaks; the script is part of the code.
NLLB_CODES = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn",
    "be": "bel_Cyrl", "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn",
    "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn",
    "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "eo": "epo_Latn",
    "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn",
    "gu": "guj_Gujr", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn",
    "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "is": "isl_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "ka": "kat_Geor", "kk": "kaz_Cyrl",
    "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "lt": "lit_Latn",
    "lv": "lvs_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl",
    "mr": "mar_Deva", "ms": "zsm_Latn", "mt": "mlt_Latn", "my": "mya_Mymr",
    "nb": "nob_Latn", "ne": "npi_Deva", "nl": "nld_Latn", "nn": "nno_Latn",
    "pa": "pan_Guru", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn",
    "ru": "rus_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn", "sq": "als_Latn",
    "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml",
    "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn",
    "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn",
    "yo": "yor_Latn", "zh": "zho_Hans", "zu": "zul_Latn",
}  # fmt: skip
# M2M100 spells a language as its ISO code between double underscores.
_M2M100_TOKEN = re.compile(r"^__([a-z]{2,3})__$")


class TransformersOptions(BackendOptions):
    """Options of the transformers backend."""

    name: Literal["transformers"] = "transformers"
    model: str | None = Field(
        None, description="hub id or local folder; without one the backend is off"
    )
    device: Literal["cpu", "cuda"] = "cpu"
    source: str | None = Field(None, description="source language of a one-pair model")
    target: str | None = Field(None, description="target language of a one-pair model")
    num_beams: int | None = Field(
        None, ge=1, description="beam width; None keeps the model's own setting"
    )
    max_new_tokens: int = Field(256, ge=1)

    def is_configured(self) -> bool:
        """Off until a model is named."""
        return self.model is not None


class _LanguageCodes:
    """How a multilingual model names languages: a token per ISO code."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    @classmethod
    def of(cls, vocabulary: dict[str, int]) -> _LanguageCodes | None:
        nllb = {iso: code for iso, code in NLLB_CODES.items() if code in vocabulary}
        if nllb:
            return cls(nllb)
        m2m100 = {
            match.group(1): token
            for token in vocabulary
            if (match := _M2M100_TOKEN.match(token))
        }
        return cls(m2m100) if m2m100 else None


class TransformersBackend(TranslationBackend):
    """Batched `generate` with a `AutoModelForSeq2SeqLM` and its tokenizer."""

    name = "transformers"

    def __init__(self, options: TransformersOptions) -> None:
        if options.model is None:
            raise BackendUnavailable(self.name, "no model is configured")
        self._options = options
        self._lock = threading.Lock()
        started = time.perf_counter()
        self._tokenizer, self._model, self._torch = _load(options)
        self._codes = _LanguageCodes.of(self._tokenizer.get_vocab())
        self._pairs = self._find_pairs()
        logger.info(
            "loaded translation model %s on %s in %.2f s (%d pairs)",
            options.model,
            options.device,
            time.perf_counter() - started,
            len(self._pairs),
        )

    def pairs(self) -> set[tuple[str, str]]:
        """Every ordered pair of the model's languages, or its one pair."""
        return set(self._pairs)

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate the batch in one padded `generate` call."""
        generate_options: dict[str, Any] = {
            "max_new_tokens": self._options.max_new_tokens
        }
        if self._options.num_beams is not None:
            generate_options["num_beams"] = self._options.num_beams
        # src_lang is tokenizer state, so a batch holds the lock throughout.
        with self._lock:
            if self._codes is not None:
                self._tokenizer.src_lang = self._codes.tokens[source]
                generate_options["forced_bos_token_id"] = (
                    self._tokenizer.convert_tokens_to_ids(self._codes.tokens[target])
                )
            try:
                return self._generate(texts, generate_options)
            except (RuntimeError, ValueError) as error:
                raise BackendFailed(self.name, str(error)) from error

    def _generate(self, texts: list[str], options: dict[str, Any]) -> list[str]:
        inputs = self._tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True
        ).to(self._options.device)
        with self._torch.inference_mode():
            output = self._model.generate(**inputs, **options)
        return [
            text.strip()
            for text in self._tokenizer.batch_decode(output, skip_special_tokens=True)
        ]

    def _find_pairs(self) -> set[tuple[str, str]]:
        if self._codes is not None:
            languages = self._codes.tokens
            return {(s, t) for s in languages for t in languages if s != t}
        source = self._options.source or getattr(self._tokenizer, "source_lang", None)
        target = self._options.target or getattr(self._tokenizer, "target_lang", None)
        if not source or not target:
            raise BackendUnavailable(
                self.name,
                f"{self._options.model!r} names no languages; set 'source' and "
                "'target' in its options",
            )
        return {(source, target)}


def _load(options: TransformersOptions) -> tuple[Any, Any, Any]:
    try:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    except ImportError as error:
        raise BackendUnavailable(
            "transformers", "install the Python packages 'transformers' and 'torch'"
        ) from error
    if options.device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("transformers", "device 'cuda' is not available")
    try:
        tokenizer = AutoTokenizer.from_pretrained(options.model)
        model = AutoModelForSeq2SeqLM.from_pretrained(options.model)
    except (OSError, ValueError) as error:
        raise BackendUnavailable(
            "transformers", f"cannot load {options.model!r}: {error}"
        ) from error
    return tokenizer, model.to(options.device).eval(), torch
