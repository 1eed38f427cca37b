"""Parsing of client messages and the layout of logged events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.protocol import (
    Configure,
    EndOfStream,
    Final,
    Hello,
    SessionRequest,
    client_message_adapter,
)
from app.stages import Capabilities
from app.translate_file import output_paths
from app.wire import EventRecord, header_body


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"type": "hello", "token": "t"}', Hello),
        ('{"type": "config", "sample_rate": 44100}', Configure),
        ('{"type": "end"}', EndOfStream),
    ],
)
def test_client_messages_parse(text: str, kind: type) -> None:
    assert isinstance(client_message_adapter.validate_json(text), kind)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type": "shout"}',
        '{"type": "hello"}',
        '{"type": "hello", "token": "t", "extra": 1}',
        '{"type": "hello", "token": "t", "last_event_id": -1}',
        "[]",
    ],
)
def test_client_messages_reject_malformed(text: str) -> None:
    with pytest.raises(ValidationError):
        client_message_adapter.validate_json(text)


def test_session_request_rejects_duplicate_and_bad_languages() -> None:
    with pytest.raises(ValidationError):
        SessionRequest(source="en", targets=["es", "es"])
    with pytest.raises(ValidationError):
        SessionRequest(source="english", targets=["es"])
    with pytest.raises(ValidationError):
        SessionRequest(source="en", targets=[])


def test_event_record_from_pubsub_and_stream_agree() -> None:
    body = header_body(
        Final(utterance=1, text="hi", language="en", start_ms=0, end_ms=5)
    )
    header = b'{"id":7,' + body[1:]

    from_pubsub = EventRecord.from_pubsub(header + b"\n" + b"\x00\x01\n\x02")
    from_stream = EventRecord.from_stream({b"h": header, b"b": b"\x00\x01\n\x02"})

    assert from_pubsub == from_stream
    assert from_pubsub.id == 7
    assert json.loads(from_pubsub.text)["text"] == "hi"


def test_capabilities_explain_refusals() -> None:
    capabilities = Capabilities(
        transcription=["en", "es"], pairs=[("en", "es")], speech=["es"]
    )

    assert capabilities.refusal("en", ["es"]) is None
    assert "recognition" in (capabilities.refusal("xx", ["es"]) or "")
    assert "translation" in (capabilities.refusal("en", ["pt"]) or "")


def test_output_paths_one_file_per_language(tmp_path) -> None:
    out = tmp_path / "out.wav"

    assert output_paths(out, ["es"]) == {"es": out}
    assert output_paths(out, ["es", "pt"]) == {
        "es": tmp_path / "out.es.wav",
        "pt": tmp_path / "out.pt.wav",
    }


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
_TYPES = st.sampled_from(["hello", "config", "end", "audio", "", "HELLO"])


@given(st.dictionaries(st.text(max_size=12), _JSON, max_size=5), _TYPES)
def test_any_json_object_parses_or_is_refused_cleanly(
    fields: dict[str, object], kind: str
) -> None:
    text = json.dumps({**fields, "type": kind})
    try:
        message = client_message_adapter.validate_json(text)
    except ValidationError:
        return
    assert isinstance(message, Hello | Configure | EndOfStream)
    assert message.type == kind


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_parse_or_are_refused_cleanly(data: bytes) -> None:
    try:
        client_message_adapter.validate_json(data)
    except ValidationError:
        return


@given(
    st.text(min_size=1, max_size=512),
    st.integers(min_value=0, max_value=2**53),
    st.none() | st.text(min_size=1, max_size=64),
)
def test_every_valid_hello_survives_the_wire(
    token: str, last_event_id: int, epoch: str | None
) -> None:
    hello = Hello(type="hello", token=token, last_event_id=last_event_id, epoch=epoch)
    assert client_message_adapter.validate_json(hello.model_dump_json()) == hello


@given(st.dictionaries(st.text(max_size=10), _JSON, max_size=6))
def test_session_requests_parse_or_are_refused_cleanly(
    fields: dict[str, object],
) -> None:
    try:
        request = SessionRequest.model_validate(fields)
    except ValidationError:
        return
    assert 1 <= len(request.targets) <= 8
    assert len(set(request.targets)) == len(request.targets)
