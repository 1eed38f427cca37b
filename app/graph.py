"""Builds the deployment graph: ingress in front of the three model stages.

`serve run serve_config.yaml` calls `build_app` with the `args` of the file;
each stage's model settings come from its `user_config` there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from app.ingress import Ingress
from app.settings import IngressSettings
from deployments import Synthesizer, Transcriber, Translator


class TolkArgs(BaseModel):
    """Arguments of the application; unset ingress fields come from TOLK_* vars."""

    # Errors never echo a value: a misplaced API key must not reach a log.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    redis_url: str | None = None
    ingress: dict[str, Any] = Field(default_factory=dict)


def build_app(args: dict[str, Any] | TolkArgs) -> Application:
    """The application; `args` are those of the serve config file."""
    args = TolkArgs.model_validate(args)
    overrides = dict(args.ingress)
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    settings = IngressSettings(**overrides)
    return Ingress.bind(
        Transcriber.bind(),
        Translator.bind(),
        Synthesizer.bind(),
        settings.model_dump(),
    )
