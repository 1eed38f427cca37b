"""API keys, bearer headers and origins: the pure rules of access."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.access import ApiKeys, bearer, digest, key_file, origin_allowed
from app.settings import IngressSettings


def test_a_configured_key_is_known_by_its_digest_only() -> None:
    keys = ApiKeys([digest("first-key"), digest("second-key").upper()])

    assert keys.identify("second-key") == digest("second-key")[:8]
    assert keys.identify("first-key") == digest("first-key")[:8]
    assert keys.identify("second-key ") is None
    assert keys.identify(digest("first-key")) is None
    assert keys.identify(None) is None
    assert not ApiKeys([]) and ApiKeys([]).identify("anything") is None


@given(st.text(max_size=200))
def test_no_text_but_the_key_opens(text: str) -> None:
    keys = ApiKeys([digest("the-one-key")])
    assert (keys.identify(text) is not None) == (text == "the-one-key")


@pytest.mark.parametrize(
    ("header", "credential"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_reads_the_credential(
    header: str | None, credential: str | None
) -> None:
    assert bearer(header) == credential


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "verdict"),
    [
        (None, "tolk.example:8000", [], True),
        ("http://tolk.example:8000", "tolk.example:8000", [], True),
        ("http://TOLK.example:8000/", "tolk.example:8000", [], True),
        ("http://tolk.example:8001", "tolk.example:8000", [], False),
        ("https://evil.example", "tolk.example:8000", [], False),
        ("null", "tolk.example:8000", [], False),
        ("https://app.example", "tolk.example", ["https://app.example/"], True),
        ("https://app.example.evil", "tolk.example", ["https://app.example"], False),
        ("https://anything.example", "tolk.example", ["*"], True),
    ],
)
def test_origins(
    origin: str | None, host: str, allowed: list[str], verdict: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is verdict


def test_settings_take_digests_and_never_echo_a_key() -> None:
    IngressSettings(api_keys=[digest("k")])
    with pytest.raises(ValueError) as refused:
        IngressSettings(api_keys=["my-raw-secret-key"])
    assert "my-raw-secret-key" not in str(refused.value)


def test_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "api-key"

    first = key_file(path)

    assert key_file(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first) >= 40
