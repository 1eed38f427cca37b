"""Tolk's model stages as Ray Serve deployments, and their settings.

Each stage also has a plain class that runs in process without Ray:
`SpeechRecognizer`, `TextTranslator` and `SpeechSynthesizer`.

Names load on first use, so that importing `deployments.schema` (as the
ingress does) pulls in neither Ray Serve nor any model runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployments.recognition import SpeechRecognizer, TranscriberSettings
    from deployments.synthesis.voices import (
        SpeechSynthesizer,
        SynthesizerSettings,
        VoiceChoice,
    )
    from deployments.synthesizer import Synthesizer
    from deployments.transcriber import Transcriber
    from deployments.translation.routing import (
        TextTranslator,
        TranslationRoute,
        TranslatorSettings,
    )
    from deployments.translator import Translator

_HOMES = {
    "SpeechRecognizer": "deployments.recognition",
    "TranscriberSettings": "deployments.recognition",
    "Transcriber": "deployments.transcriber",
    "TextTranslator": "deployments.translation.routing",
    "TranslationRoute": "deployments.translation.routing",
    "TranslatorSettings": "deployments.translation.routing",
    "Translator": "deployments.translator",
    "SpeechSynthesizer": "deployments.synthesis.voices",
    "SynthesizerSettings": "deployments.synthesis.voices",
    "VoiceChoice": "deployments.synthesis.voices",
    "Synthesizer": "deployments.synthesizer",
}

__all__ = [
    "SpeechRecognizer",
    "SpeechSynthesizer",
    "Synthesizer",
    "SynthesizerSettings",
    "TextTranslator",
    "Transcriber",
    "TranscriberSettings",
    "TranslationRoute",
    "Translator",
    "TranslatorSettings",
    "VoiceChoice",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'deployments' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
