"""Tolk's model stages as Ray Serve deployments, and their settings.

Each stage also has a plain class that runs in process without Ray:
`SpeechRecognizer`, `TextTranslator` and `SpeechSynthesizer`.
"""

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
