"""The whole service for end-to-end tests: one local Ray, Serve deployed from
`serve_config.yaml` exactly as `serve run` does, and the tests' own Redis."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml
from ray import serve
from ray.serve._private import api as serve_api
from ray.serve.schema import ServeDeploySchema

from app.access import digest, new_key
from app.embedded_redis import EmbeddedRedis, free_port
from deployments.recognition import SpeechRecognizer

ROOT = Path(__file__).resolve().parents[2]
_DEPLOY_TIMEOUT_S = 600
# A page elsewhere that the tests' service lets open WebSockets.
ALLOWED_ORIGIN = "https://app.example"
# A second API key, for the test that spends all of its sessions; the limit is
# high enough for everything else the suite does with the first key.
LIMITED_KEY = new_key()
SESSIONS_PER_KEY = 300


def _deploy_config(redis_url: str, port: int, api_key: str) -> ServeDeploySchema:
    document = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    document["http_options"] = {"host": "127.0.0.1", "port": port}
    for application in document["applications"]:
        args = application.setdefault("args", {})
        args["redis_url"] = redis_url
        args["ingress"] = {
            **(args.get("ingress") or {}),
            "api_keys": [digest(api_key), digest(LIMITED_KEY)],
            "allowed_origins": [ALLOWED_ORIGIN],
            "max_sessions_per_key": SESSIONS_PER_KEY,
        }
    return ServeDeploySchema.model_validate(document)


def _wait_until_running(name: str) -> None:
    deadline = time.monotonic() + _DEPLOY_TIMEOUT_S
    while time.monotonic() < deadline:
        application = serve.status().applications.get(name)
        if application is not None and application.status == "RUNNING":
            return
        if application is not None and application.status == "DEPLOY_FAILED":
            pytest.fail(f"deploying {name} failed: {application.message}")
        time.sleep(1)
    pytest.fail(f"{name} not running after {_DEPLOY_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def service_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """Base URL of a running Tolk, deployed from the repository's serve config."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    # Every client of the tests, the tolk commands they start too, reads it.
    api_key = os.environ.setdefault("TOLK_API_KEY", new_key())
    config = _deploy_config(redis_server.url, port, api_key)
    # The same two calls `serve run serve_config.yaml` makes.
    client = serve_api.serve_start(
        http_options=config.http_options.model_dump(),
        proxy_location=config.proxy_location,
    )
    client.deploy_apps(config, _blocking=False)
    _wait_until_running(config.applications[0].name)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def recognizer() -> SpeechRecognizer:
    """An in-process recognizer that reads synthesized speech back."""
    return SpeechRecognizer()
