"""Settings of the ingress: read once, validated, passed down."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.phrasing import PhrasingConfig
from app.segmenter import SegmenterConfig


class IngressSettings(BaseSettings):
    """What the ingress needs to hold sessions; every field has an env var TOLK_*."""

    # Errors never echo a value: a misplaced secret must not reach a log.
    model_config = SettingsConfigDict(
        env_prefix="TOLK_", extra="forbid", hide_input_in_errors=True
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis that holds every session's state and output log.",
    )
    api_keys: list[str] = Field(
        [],
        description="SHA-256 hex digests of the API keys that may create "
        "sessions (`tolk keygen` makes a key and its digest); none: nobody can.",
    )
    allowed_origins: list[str] = Field(
        [],
        description="Origins (scheme://host:port) whose pages may open "
        "WebSockets besides the service's own; '*' allows any.",
    )
    redis_max_connections: int = Field(
        32, ge=4, description="Redis connections one replica may hold at most."
    )
    session_ttl_s: int = Field(
        3600, ge=10, description="Idle time after which a session's keys expire."
    )
    event_log_max_events: int = Field(
        1000, ge=10, description="Output events kept per session for catch-up."
    )
    event_log_max_bytes: int = Field(
        16 << 20,
        ge=1 << 16,
        description="Bytes of output (synthesized speech included) kept per "
        "session for catch-up; the oldest events go first.",
    )
    readiness_timeout_s: float = Field(
        5.0, gt=0, description="Time Redis and each stage have to answer /readyz."
    )
    auth_timeout_s: float = Field(
        10.0, gt=0, description="Time a new WebSocket has to send its hello."
    )
    max_frame_bytes: int = Field(
        1 << 20, ge=1024, description="Largest WebSocket message accepted."
    )
    max_audio_speed: float = Field(
        4.0,
        ge=1.0,
        description="Audio is read no faster than this multiple of real time; "
        "a faster client is slowed down.",
    )
    audio_burst_s: float = Field(
        30.0,
        ge=0,
        description="Seconds of audio a session may send ahead of that pace, "
        "e.g. what a client buffered while reconnecting.",
    )
    max_pending_utterances: int = Field(
        32,
        ge=1,
        description="Ended utterances (and ends) of a session waiting for the "
        "stages; with this many, the speaker's audio is not read until one is "
        "output.",
    )
    max_connections_per_session: int = Field(
        16, ge=1, description="Open connections one session may have."
    )
    max_sessions_per_key: int = Field(
        100,
        ge=1,
        description="Sessions one API key may have alive; more get HTTP 429 "
        "until one ends or expires.",
    )
    max_listeners_per_session: int = Field(
        100, ge=1, description="Listener tokens one session may issue."
    )
    max_session_s: int = Field(
        4 * 3600, ge=60, description="Longest a session lasts from its creation."
    )
    min_sample_rate: int = Field(8000, description="Lowest input sample rate.")
    max_sample_rate: int = Field(192_000, description="Highest input sample rate.")
    partial_interval_s: float = Field(
        1.0, gt=0, description="Speech between two partial transcripts."
    )
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability.")
    min_silence_s: float = Field(
        0.6, gt=0, description="Silence that ends an utterance."
    )
    likely_end_s: float = Field(
        0.35,
        ge=0,
        description="Silence after which the final transcript starts, before "
        "min_silence_s makes the end certain; 0: only once it is.",
    )
    min_speech_s: float = Field(
        0.25, gt=0, description="Shorter bursts of speech are dropped as noise."
    )
    max_utterance_s: float = Field(
        20.0, gt=1, description="Utterances are cut at this length."
    )
    context_chars: int = Field(
        200, ge=0, description="Recent transcript given to the recognizer as prompt."
    )
    first_segment_words: int = Field(
        4, ge=1, description="Words in the first synthesized segment of speech."
    )
    segment_growth: float = Field(
        1.5, ge=1.0, description="Each later segment may hold this many times more."
    )
    max_segment_words: int = Field(
        40, ge=1, description="Most words in one synthesized segment."
    )

    @field_validator("api_keys")
    @classmethod
    def _digests_only(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
                # The message must not echo the value: it may be a raw key.
                raise ValueError("api_keys holds SHA-256 hex digests, not keys")
        return keys

    @model_validator(mode="after")
    def _likely_end_before_end(self) -> Self:
        if self.likely_end_s >= self.min_silence_s:
            # The end would always come first: early finals would never start.
            raise ValueError("likely_end_s must be shorter than min_silence_s")
        return self

    def segmenter(self) -> SegmenterConfig:
        return SegmenterConfig.from_seconds(
            threshold=self.vad_threshold,
            min_silence_s=self.min_silence_s,
            min_speech_s=self.min_speech_s,
            max_utterance_s=self.max_utterance_s,
            partial_interval_s=self.partial_interval_s,
            likely_end_s=self.likely_end_s,
        )

    def phrasing(self) -> PhrasingConfig:
        return PhrasingConfig(
            first_words=self.first_segment_words,
            growth=self.segment_growth,
            max_words=self.max_segment_words,
        )
