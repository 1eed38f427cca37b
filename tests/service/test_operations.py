"""What an operator watches: health, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
import ray

from app.client import TolkClient
from tests.service.helpers import translate_clip

pytestmark = pytest.mark.service

# Ray's metrics agent exports what replicas recorded every few seconds.
_EXPORT_WAIT_S = 60


def _metrics_url() -> str:
    node = next(node for node in ray.nodes() if node["Alive"])
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def _total(text: str, name: str, **tags: str) -> float:
    """Sum of a metric's samples whose tags include `tags`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}(?:{{(.*)}})? ([0-9.eE+-]+)$", line)
        if match and all(
            f'{k}="{v}"' in (match.group(1) or "") for k, v in tags.items()
        ):
            total += float(match.group(2))
    return total


async def test_health_and_readiness(service_url: str) -> None:
    async with httpx.AsyncClient(base_url=service_url, timeout=30) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")

    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "redis": "ok",
        "stages": {"transcription": "ok", "translation": "ok", "synthesis": "ok"},
    }


async def test_metrics_count_a_session(service_url: str, audio_dir: Path) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        before = (await http.get(_metrics_url())).text
        async with TolkClient(service_url) as client:
            # A pause long enough for an early final, too short to end the
            # utterance before the end of the stream does.
            output = await translate_clip(
                client, audio_dir / "LJ001-0002.wav", ["pt"], trailing_silence_s=0.5
            )
        assert output.finals

        deadline = asyncio.get_running_loop().time() + _EXPORT_WAIT_S
        while True:
            after = (await http.get(_metrics_url())).text
            finals = _total(after, "ray_tolk_events_total", type="final")
            if finals > _total(before, "ray_tolk_events_total", type="final"):
                break
            assert asyncio.get_running_loop().time() < deadline, "no final counted"
            await asyncio.sleep(2)

    assert _total(after, "ray_tolk_events_total", type="audio") > 0
    used = _total(after, "ray_tolk_early_finals_total", outcome="used")
    assert used > _total(before, "ray_tolk_early_finals_total", outcome="used")
    for stage in ("transcription", "translation", "synthesis"):
        assert _total(after, "ray_tolk_stage_seconds_count", stage=stage) > 0
        assert _total(after, "ray_tolk_stage_compute_seconds_count", stage=stage) > 0
