"""`serve_config.yaml` is valid for Ray and for each stage's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from ray.serve.schema import ServeDeploySchema

from app.graph import TolkArgs
from deployments import TranscriberSettings, TranslatorSettings
from deployments.synthesis.voices import SynthesizerSettings

CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"
SETTINGS: dict[str, type[BaseModel]] = {
    "Transcriber": TranscriberSettings,
    "Translator": TranslatorSettings,
    "Synthesizer": SynthesizerSettings,
}


@pytest.fixture
def document() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def _deployments(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in document["applications"][0]["deployments"]}


def test_serve_config_is_accepted_by_ray(document: dict[str, Any]) -> None:
    schema = ServeDeploySchema.model_validate(document)

    assert schema.applications[0].import_path == "app.graph:build_app"
    TolkArgs.model_validate(document["applications"][0]["args"])


def test_serve_config_stage_settings_validate(document: dict[str, Any]) -> None:
    deployments = _deployments(document)

    for name, settings in SETTINGS.items():
        settings.model_validate(deployments[name]["user_config"])


def test_serve_config_sizes_ingress_for_sockets(document: dict[str, Any]) -> None:
    ingress = _deployments(document)["Ingress"]

    assert ingress["num_replicas"] == 2
    assert ingress["max_ongoing_requests"] >= 100


def test_serve_config_stages_autoscale(document: dict[str, Any]) -> None:
    for name in SETTINGS:
        scaling = _deployments(document)[name]["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]


def test_stage_settings_reject_unknown_keys() -> None:
    for settings in SETTINGS.values():
        with pytest.raises(ValidationError):
            settings.model_validate({"no_such_field": 1})
