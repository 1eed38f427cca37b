"""The translation stage on a local Ray Serve: batching, errors, user_config."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from app.embedded_redis import free_port
from deployments import Translator
from deployments.errors import UnsupportedLanguagePair

_APP = "stage-translator"


@pytest.fixture(scope="module")
def translator() -> Iterator[DeploymentHandle]:
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Any free port: 8000 may belong to a Tolk running on this machine.
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    yield serve.run(Translator.bind(), name=_APP, route_prefix=None)
    serve.delete(_APP)
    if started_ray:
        serve.shutdown()
        ray.shutdown()


async def test_concurrent_calls_are_batched_per_pair(
    translator: DeploymentHandle,
) -> None:
    calls = [("Good morning.", "en", "pt"), ("Thank you.", "en", "pt")]
    calls.append(("Bom dia.", "pt", "en"))

    results = await asyncio.gather(
        *(translator.translate.remote(text, s, t) for text, s, t in calls)
    )

    assert [(r.source, r.target, r.backend) for r in results] == [
        ("en", "pt", "bergamot"),
        ("en", "pt", "bergamot"),
        ("pt", "en", "bergamot"),
    ]
    assert all(result.text for result in results)


async def test_unsupported_pair_reaches_the_caller(
    translator: DeploymentHandle,
) -> None:
    with pytest.raises(UnsupportedLanguagePair) as caught:
        await translator.translate.remote("Hallo", "de", "ja")
    assert (caught.value.source, caught.value.target) == ("de", "ja")


def test_user_config_replaces_the_routes(translator: DeploymentHandle) -> None:
    assert ("en", "pt") in translator.pairs.remote().result()
    routes = [{"pair": "pt-en", "backend": {"name": "bergamot"}}]

    handle = serve.run(
        Translator.options(user_config={"routes": routes}).bind(),
        name=_APP,
        route_prefix=None,
    )

    assert handle.pairs.remote().result() == [("pt", "en")]
