"""How espeak-ng, and the phonemizers built on it, name languages."""

from __future__ import annotations

from collections.abc import Collection

# The variant of each language Tolk speaks by default where espeak-ng has
# several; Portuguese is Brazilian to match the Bergamot translation models.
_PREFERRED_VARIANT = {
    "en": "en-us",
    "fr": "fr-fr",
    "pt": "pt-br",
    "vi": "vi",
    "zh": "cmn",
}


def espeak_language(language: str) -> str:
    """espeak-ng's code for the preferred variant of an ISO 639-1 language."""
    return _PREFERRED_VARIANT.get(language, language)


def espeak_voice_for(language: str, available: Collection[str]) -> str | None:
    """The espeak-ng voice to speak `language` with, among `available` ones."""
    for candidate in (espeak_language(language), language):
        if candidate in available:
            return candidate
    variants = sorted(code for code in available if code.startswith(f"{language}-"))
    return variants[0] if variants else None


def espeak_languages(available: Collection[str]) -> set[str]:
    """Language codes that some of the `available` espeak-ng voices speak."""
    languages = {code.split("-")[0] for code in available}
    languages.update(
        language
        for language in _PREFERRED_VARIANT
        if espeak_voice_for(language, available) is not None
    )
    return languages
