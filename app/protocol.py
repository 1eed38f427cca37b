"""Messages of the session protocol, as typed values.

Client messages arrive as JSON text frames (plus binary PCM16 audio frames);
server events leave as JSON text frames, an `audio` event followed by one
binary frame. `docs/protocol.md` is the prose version of this module.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]

# Target languages one session translates into, at creation or added later.
MAX_TARGETS = 8


class CloseCode(IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    SESSION_NOT_FOUND = 4404
    AUTH_TIMEOUT = 4408
    RESYNC_INPUT = 4409
    SESSION_CLOSED = 4410
    TOO_MANY_CONNECTIONS = 4429


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Client to server.


class SessionRequest(_Message):
    """Body of `POST /v1/sessions`."""

    source: LanguageCode
    targets: list[LanguageCode] = Field(min_length=1, max_length=MAX_TARGETS)
    sample_rate: int = Field(
        16_000, strict=True, description="Hz of the PCM16 the client sends."
    )
    format: Literal["pcm16le"] = "pcm16le"

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, targets: list[str]) -> list[str]:
        if len(set(targets)) != len(targets):
            raise ValueError("target languages must be distinct")
        return targets


class Hello(_Message):
    """First message of every connection: proves access, picks the resume point.

    `epoch` and `last_event_id` come from the client's previous connection;
    a first connection leaves the epoch out.
    """

    type: Literal["hello"]
    token: str = Field(min_length=1, max_length=512)
    last_event_id: int = Field(0, ge=0, le=2**53)
    epoch: str | None = Field(None, min_length=1, max_length=64)


class Configure(_Message):
    """Changes the input while streaming, e.g. after a microphone switch."""

    type: Literal["config"]
    sample_rate: int | None = None


class EndOfStream(_Message):
    """No more audio follows; finish the utterance in progress."""

    type: Literal["end"]


class AddTarget(_Message):
    """Also translate into `language` from the next utterance on; any role."""

    type: Literal["add_target"]
    language: LanguageCode


ClientMessage = Annotated[
    Hello | Configure | EndOfStream | AddTarget, Field(discriminator="type")
]
client_message_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


# Server to client, outside the event log (one connection only).


class SessionCreated(_Message):
    session_id: str
    token: str
    websocket_path: str
    expires_in_s: int


class ListenerCreated(_Message):
    """Answer to `POST /v1/sessions/{id}/listeners`: a listen-only token."""

    session_id: str
    token: str
    websocket_path: str


class Ready(_Message):
    """Sent once the hello is accepted.

    `input_samples` is how much of the client's audio the session has stored:
    a resuming speaker sends what follows it, and nothing before it.
    """

    type: Literal["ready"] = "ready"
    session_id: str
    replica: str
    source: str
    targets: list[str]
    sample_rate: int
    epoch: str
    last_event_id: int
    input_samples: int
    role: Literal["speaker", "listener"] = "speaker"


class Ack(_Message):
    """The session has stored the client's audio up to `input_samples`."""

    type: Literal["ack"] = "ack"
    input_samples: int


class RecoveryImpossible(_Message):
    """Events the client asked for are gone; delivery goes on after `last_event_id`.

    `reason` is `trimmed` (older than the log keeps) or `history_lost` (the
    log lost events, and the session's epoch changed).
    """

    type: Literal["recovery_impossible"] = "recovery_impossible"
    reason: Literal["trimmed", "history_lost"]
    epoch: str
    last_event_id: int


class SessionClosed(_Message):
    """The session was ended on purpose; its connections close after this."""

    type: Literal["session_closed"] = "session_closed"


class ErrorMessage(_Message):
    """Tells the client what it did wrong; fatal ones are followed by a close."""

    type: Literal["error"] = "error"
    code: str
    message: str


# Server to client, in the session's event log: every one carries an `id`.


class Partial(_Message):
    type: Literal["partial"] = "partial"
    utterance: int
    text: str


class Final(_Message):
    type: Literal["final"] = "final"
    utterance: int
    text: str
    language: str
    start_ms: int
    end_ms: int
    compute_ms: int = Field(0, description="Time the recognizer spent on it.")


class TranslationText(_Message):
    type: Literal["translation"] = "translation"
    utterance: int
    language: str
    text: str
    compute_ms: int = Field(0, description="Time the translator spent on it.")


class AudioHeader(_Message):
    """Announces the binary frame that follows it."""

    type: Literal["audio"] = "audio"
    utterance: int
    language: str
    segment: int
    format: Literal["pcm16le"] = "pcm16le"
    sample_rate: int
    channels: Literal[1] = 1
    bytes: int
    compute_ms: int = Field(0, description="Time the voice spent on it.")


class StageError(_Message):
    """A stage failed on one utterance; the session goes on."""

    type: Literal["stage_error"] = "stage_error"
    utterance: int
    stage: str
    language: str | None = None
    message: str


class TargetAdded(_Message):
    """The session translates into `language` too, from the next utterance on."""

    type: Literal["target_added"] = "target_added"
    language: str


class StreamEnded(_Message):
    """Everything sent before the client's `end` has been processed."""

    type: Literal["end_of_stream"] = "end_of_stream"
    utterances: int


SessionEvent = (
    Partial
    | Final
    | TranslationText
    | AudioHeader
    | StageError
    | TargetAdded
    | StreamEnded
)
