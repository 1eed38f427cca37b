"""Checks that cluster.yaml is a launcher file Ray accepts and fits Tolk."""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

# Private module, but these are the two steps `ray up` runs on a file before it
# contacts the cloud; there is no public entry point that stops short of that.
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
REDIS_PORT = 6379


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any outbound connection, so validation provably stays offline."""

    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"cluster config check tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def raw_config() -> dict[str, Any]:
    with CLUSTER_YAML.open() as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


@pytest.fixture
def config(raw_config: dict[str, Any], no_network: None) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(raw_config))
    validate_config(prepared)
    return prepared


def _ports(commands: list[str], pattern: str) -> set[int]:
    return {int(m) for cmd in commands for m in re.findall(pattern, cmd)}


def test_cluster_config_passes_ray_validation(config: dict[str, Any]) -> None:
    assert config["cluster_name"] == "tolk"
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize(
    "path",
    [
        ("max_worker",),
        ("available_node_types", "tolk.gpu", "max_worker"),
    ],
    ids=["top-level", "node-type"],
)
def test_cluster_config_rejects_unknown_key(
    raw_config: dict[str, Any], no_network: None, path: tuple[str, ...]
) -> None:
    target = raw_config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = 4

    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(raw_config))


def test_cluster_config_has_gpu_worker_type(config: dict[str, Any]) -> None:
    head = config["head_node_type"]
    gpu_types = {
        name: node
        for name, node in config["available_node_types"].items()
        if name != head and node["resources"].get("GPU", 0) >= 1
    }

    assert gpu_types, "no worker node type offers a GPU"
    assert all(node["max_workers"] >= 1 for node in gpu_types.values())
    assert all(node["resources"].get("CPU", 0) >= 1 for node in gpu_types.values())


def test_cluster_config_head_is_cpu_only(config: dict[str, Any]) -> None:
    head = config["available_node_types"][config["head_node_type"]]

    assert head["resources"].get("CPU", 0) >= 1
    assert head["resources"].get("GPU", 0) == 0
    assert head["min_workers"] == head["max_workers"] == 0


def test_cluster_config_ray_port_is_not_redis_port(config: dict[str, Any]) -> None:
    head_ports = _ports(config["head_start_ray_commands"], r"--port[= ](\d+)")
    worker_ports = _ports(config["worker_start_ray_commands"], r"--address=\S*:(\d+)")

    # Ray's default port is Redis's; an absent flag would mean 6379 too.
    assert len(head_ports) == 1
    assert REDIS_PORT not in head_ports
    assert worker_ports == head_ports
