"""Settings of the ingress: read once, validated, passed down."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.phrasing import PhrasingConfig


class IngressSettings(BaseSettings):
    """What the ingress needs to hold sessions; every field has an env var TOLK_*."""

    model_config = SettingsConfigDict(env_prefix="TOLK_", extra="forbid")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis that holds every session's state and output log.",
    )
    session_ttl_s: int = Field(
        3600, ge=10, description="Idle time after which a session's keys expire."
    )
    event_log_max_events: int = Field(
        1000, ge=10, description="Output events kept per session for catch-up."
    )
    auth_timeout_s: float = Field(
        10.0, gt=0, description="Time a new WebSocket has to send its hello."
    )
    max_frame_bytes: int = Field(
        1 << 20, ge=1024, description="Largest WebSocket message accepted."
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

    def phrasing(self) -> PhrasingConfig:
        return PhrasingConfig(
            first_words=self.first_segment_words,
            growth=self.segment_growth,
            max_words=self.max_segment_words,
        )
