"""Translation backends, routing between them and per-pair batching."""

from __future__ import annotations

import logging
import pickle
import shutil

import pydantic
import pytest

from deployments.errors import BackendFailed, UnsupportedLanguagePair
from deployments.schema import Translation
from deployments.translation import routing
from deployments.translation.apertium import ApertiumBackend, ApertiumOptions
from deployments.translation.backend import TranslationBackend
from deployments.translation.bergamot import BergamotBackend, BergamotOptions
from deployments.translation.routing import (
    TextTranslator,
    TranslationJob,
    TranslationRoute,
    TranslatorSettings,
)
from deployments.translation.transformers_seq2seq import TransformersOptions
from tests.deployments.helpers import words

needs_apertium = pytest.mark.skipif(
    shutil.which("apertium") is None, reason="Debian package apertium not installed"
)


@pytest.fixture(scope="module")
def bergamot() -> BergamotBackend:
    return BergamotBackend(BergamotOptions())


def test_bergamot_translates_english_to_portuguese(bergamot: BergamotBackend) -> None:
    texts = ["The weather is nice today.", "Where is the train station?"]

    translated = bergamot.translate(texts, "en", "pt")

    assert len(translated) == 2
    for source, text in zip(texts, translated, strict=True):
        assert text.strip()
        assert text != source
    assert "estação" in translated[1].lower()


def test_bergamot_translates_portuguese_to_english(bergamot: BergamotBackend) -> None:
    (translated,) = bergamot.translate(["Onde fica a estação de trem?"], "pt", "en")
    assert "station" in words(translated)


@needs_apertium
def test_apertium_translates_english_to_spanish() -> None:
    backend = ApertiumBackend(ApertiumOptions())
    texts = ["The house is green.", "I have two dogs", "Xyzzy went home."]

    translated = backend.translate(texts, "en", "es")

    assert translated[0] == "La casa es verde."
    assert {"tengo", "dos", "perros"} <= set(words(translated[1]))
    # The unknown word comes back without Apertium's "*" mark.
    assert translated[2].startswith("Xyzzy ")
    assert ("en", "es") in backend.pairs()
    assert ("es", "en") in backend.pairs()


def test_apertium_is_unavailable_without_its_binary() -> None:
    translator = TextTranslator(
        TranslatorSettings(
            routes=[
                TranslationRoute(
                    pair="en-es", backend=ApertiumOptions(binary="no-such-apertium")
                )
            ]
        )
    )
    assert translator.pairs() == set()


def test_default_routes_serve_the_packaged_pairs(
    text_translator: TextTranslator,
) -> None:
    expected = {("en", "pt"), ("pt", "en")}
    if shutil.which("apertium"):
        expected |= {("en", "es"), ("es", "en")}
    assert expected <= text_translator.pairs()
    assert text_translator.backend_for("en", "pt").name == "bergamot"


def test_translate_routes_by_pair(text_translator: TextTranslator) -> None:
    texts, backend, compute_s = text_translator.translate(
        ["Good morning.", "  ", "Thank you."], "en", "pt"
    )

    assert backend == "bergamot"
    assert texts[1] == ""
    assert texts[0] and texts[2]
    assert compute_s > 0


def test_translate_into_the_same_language_is_identity(
    text_translator: TextTranslator,
) -> None:
    assert text_translator.translate(["Hello."], "en", "en") == (
        ["Hello."],
        "identity",
        0.0,
    )


def test_translate_rejects_an_unsupported_pair(text_translator: TextTranslator) -> None:
    with pytest.raises(UnsupportedLanguagePair) as caught:
        text_translator.translate(["Hallo"], "de", "ja")

    assert (caught.value.source, caught.value.target) == ("de", "ja")
    assert "'de' -> 'ja'" in str(caught.value)


def test_unsupported_pair_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(UnsupportedLanguagePair("de", "ja")))
    assert (error.source, error.target) == ("de", "ja")
    assert repr(error) == "UnsupportedLanguagePair(source='de', target='ja')"


class FakeBackend(TranslationBackend):
    """Upper-cases texts; fails on Spanish targets."""

    name = "fake"

    def __init__(self, options: BergamotOptions) -> None:
        self.calls: list[tuple[list[str], str, str]] = []

    def pairs(self) -> set[tuple[str, str]]:
        return {("en", "pt"), ("en", "fr"), ("en", "es")}

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        self.calls.append((texts, source, target))
        if target == "es":
            raise BackendFailed(self.name, "out of order")
        return [text.upper() for text in texts]


@pytest.fixture
def fake_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(routing._BACKENDS, "bergamot", FakeBackend)


def test_routes_are_tried_in_order(fake_backends: None) -> None:
    translator = TextTranslator(
        TranslatorSettings(
            routes=[
                TranslationRoute(pair="en-pt", backend=BergamotOptions()),
                TranslationRoute(pair="en-es", backend=ApertiumOptions(binary="none")),
                TranslationRoute(pair="*", backend=TransformersOptions(model=None)),
                TranslationRoute(pair="en-*", backend=BergamotOptions()),
            ]
        )
    )

    assert translator.backend_for("en", "fr").name == "fake"
    assert translator.pairs() == {("en", "pt"), ("en", "fr"), ("en", "es")}
    with pytest.raises(UnsupportedLanguagePair):
        translator.backend_for("pt", "en")


@pytest.mark.parametrize(
    ("pair", "matched", "missed"),
    [
        ("en-es", ("en", "es"), ("es", "en")),
        ("en-*", ("en", "de"), ("de", "en")),
        ("*-en", ("de", "en"), ("en", "de")),
        ("*", ("xx", "yy"), None),
    ],
)
def test_route_patterns(
    pair: str, matched: tuple[str, str], missed: tuple[str, str] | None
) -> None:
    route = TranslationRoute(pair=pair, backend=BergamotOptions())
    assert route.matches(*matched)
    if missed is not None:
        assert not route.matches(*missed)


@pytest.mark.parametrize(
    "settings",
    [
        {"batch_size": 4},
        {"routes": [{"pair": "en_es", "backend": {"name": "apertium"}}]},
        {"routes": [{"pair": "en-es", "backend": {"name": "deepl"}}]},
        {"routes": [{"pair": "en-es", "backend": {"name": "apertium", "model": "x"}}]},
    ],
    ids=["unknown-key", "bad-pair", "unknown-backend", "unknown-option"],
)
def test_settings_reject_invalid_values(settings: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        TranslatorSettings.model_validate(settings)


def test_unconfigured_transformers_route_stays_off_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = TranslatorSettings.model_validate(
        {"routes": [{"pair": "*", "backend": {"name": "transformers"}}]}
    )
    with caplog.at_level(logging.INFO, logger="tolk.stage.translation"):
        translator = TextTranslator(settings)

    assert translator.pairs() == set()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_apply_keeps_backends_whose_options_did_not_change(
    fake_backends: None,
) -> None:
    translator = TextTranslator(
        TranslatorSettings(
            routes=[TranslationRoute(pair="en-pt", backend=BergamotOptions())]
        )
    )
    before = translator.backend_for("en", "pt")

    translator.apply(
        TranslatorSettings(
            routes=[TranslationRoute(pair="*", backend=BergamotOptions())],
            max_batch_size=2,
        )
    )

    assert translator.backend_for("en", "fr") is before


def test_batch_is_grouped_by_pair_and_failures_stay_in_their_group(
    fake_backends: None,
) -> None:
    translator = TextTranslator(
        TranslatorSettings(
            routes=[TranslationRoute(pair="*", backend=BergamotOptions())]
        )
    )
    backend = translator.backend_for("en", "pt")
    jobs = [
        TranslationJob("one", "en", "pt"),
        TranslationJob("dos", "en", "es"),
        TranslationJob("two", "en", "pt"),
        TranslationJob("same", "en", "en"),
    ]

    results = translator.translate_batch(jobs)

    assert backend.calls == [(["dos"], "en", "es"), (["one", "two"], "en", "pt")]
    assert results[0] == Translation("ONE", "en", "pt", "fake", results[0].compute_s)
    assert isinstance(results[1], BackendFailed)
    assert results[2].text == "TWO"
    assert results[3] == Translation("same", "en", "en", "identity", 0.0)
