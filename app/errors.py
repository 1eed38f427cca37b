"""Errors of the ingress. Each maps to a code on the wire and a close code.

TolkError
├── StoreUnavailable        Redis cannot be reached
└── SessionError            something about one session
    ├── SessionNotFound     unknown or expired session id
    ├── SessionEnded        the session was closed on purpose
    ├── Unauthorized        wrong token
    ├── TooManySessions     the API key has its most sessions alive
    ├── InputThrottled      audio must wait: ahead of pace, or stages behind
    └── ProtocolViolation   a client message the protocol forbids
"""

from __future__ import annotations

from app.protocol import CloseCode


class TolkError(Exception):
    """Root of the ingress' own errors."""

    code = "internal_error"
    close_code = CloseCode.INTERNAL_ERROR


class StoreUnavailable(TolkError):
    """The session store (Redis) did not answer."""

    code = "store_unavailable"
    close_code = CloseCode.TRY_AGAIN_LATER


class SessionError(TolkError):
    def __init__(self, session_id: str, message: str) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.message = message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(session_id={self.session_id!r}, {self.message!r})"
        )


class SessionNotFound(SessionError):
    code = "session_not_found"
    close_code = CloseCode.SESSION_NOT_FOUND


class SessionEnded(SessionError):
    code = "session_closed"
    close_code = CloseCode.SESSION_CLOSED


class Unauthorized(SessionError):
    code = "unauthorized"
    close_code = CloseCode.UNAUTHORIZED


class TooManySessions(SessionError):
    """The API key that asks for a session has `max_sessions_per_key` alive."""

    code = "too_many_sessions"


class InputThrottled(SessionError):
    """The session takes no audio now: it is ahead of its pace (for `wait_s`),
    or `max_pending_utterances` wait for the stages (`wait_s` is None)."""

    code = "input_throttled"

    def __init__(self, session_id: str, wait_s: float | None) -> None:
        reason = "ahead of its pace" if wait_s is not None else "stages behind"
        super().__init__(session_id, f"the session's audio must wait: {reason}")
        self.wait_s = wait_s


class LeaseLost(SessionError):
    """This replica's processing lease expired and another one took over."""

    code = "lease_lost"


class InputMoved(SessionError):
    """Another writer stored audio since this replica last did; reload and retry."""

    code = "input_moved"

    def __init__(self, session_id: str, position: int) -> None:
        super().__init__(session_id, f"the input is at sample {position}")
        self.position = position


class ProtocolViolation(SessionError):
    """A message the protocol does not allow; `fatal` ones end the connection."""

    code = "bad_request"
    close_code = CloseCode.BAD_REQUEST

    def __init__(
        self,
        session_id: str,
        message: str,
        *,
        code: str = "bad_request",
        fatal: bool,
        close_code: CloseCode = CloseCode.BAD_REQUEST,
    ) -> None:
        super().__init__(session_id, message)
        self.code = code
        self.fatal = fatal
        self.close_code = close_code
