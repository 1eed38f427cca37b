"""How a logged session event is laid out in Redis and on the WebSocket.

An event is a JSON header that carries its id, plus an optional binary payload
(synthesised audio). Pub/Sub carries both in one message, the header first and
a newline between: compact JSON never contains a raw newline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.protocol import SessionEvent

_SEPARATOR = b"\n"

# Published, not logged, when a session is closed on purpose; id 0 is no event.
CLOSED_NOTICE = b'{"id":0,"type":"session_closed"}\n'


@dataclass(frozen=True)
class EventRecord:
    """One event of a session's log, as stored and as delivered."""

    id: int
    header: bytes
    payload: bytes = b""

    @property
    def text(self) -> str:
        return self.header.decode()

    @property
    def is_notice(self) -> bool:
        """A message about the session, not an event of its log."""
        return self.id == 0

    @classmethod
    def from_pubsub(cls, message: bytes) -> EventRecord:
        header, _, payload = message.partition(_SEPARATOR)
        return cls(id=json.loads(header)["id"], header=header, payload=payload)

    @classmethod
    def from_stream(cls, fields: dict[bytes, bytes]) -> EventRecord:
        header = fields[b"h"]
        return cls(
            id=json.loads(header)["id"], header=header, payload=fields.get(b"b", b"")
        )


def header_body(event: SessionEvent) -> bytes:
    """JSON of an event without its id; the log script puts the id in front."""
    return event.model_dump_json().encode()
