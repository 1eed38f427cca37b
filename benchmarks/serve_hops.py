"""What one hop of Ray Serve costs on this machine, apart from Tolk.

    .venv/bin/python benchmarks/serve_hops.py [OUT.json]

Times, on an otherwise idle machine: a WebSocket message echoed by a FastAPI
app under plain uvicorn and the same app behind Serve's proxy (every message
crosses the proxy actor both ways), and a deployment handle call carrying
nothing or four seconds of 16 kHz audio, as float32 or as int16 samples. A
final transcript needs at least the last audio chunk in through the proxy,
one handle call to the recognizer and the event out through the proxy again.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import ray
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from ray import serve

from app.embedded_redis import free_port

ROUNDS = 200
app = FastAPI()


@app.websocket("/echo")
async def echo(socket: WebSocket) -> None:
    await socket.accept()
    try:
        while True:
            await socket.send_bytes(await socket.receive_bytes())
    except WebSocketDisconnect:
        return


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(app)
class Echo:
    """The echo app behind Serve's proxy."""


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Stage:
    async def call(self, audio: object) -> int:
        return 0


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Caller:
    def __init__(self, stage: serve.handle.DeploymentHandle) -> None:
        self._stage = stage

    async def time_calls(self, samples: int, dtype: str) -> list[float]:
        audio = np.zeros(samples, dtype=dtype)
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            await self._stage.call.remote(audio)
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        return times


async def _echo_times(url: str) -> list[float]:
    # A 40 ms chunk of 16 kHz PCM16, as a microphone client sends.
    chunk = bytes(1280)
    times = []
    async with websockets.connect(url, compression=None) as socket:
        for _ in range(ROUNDS):
            started = time.perf_counter()
            await socket.send(chunk)
            await socket.recv()
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    results: dict[str, dict[str, float]] = {}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    echo_url = f"ws://127.0.0.1:{port}/echo"
    results["websocket_echo_uvicorn"] = _summary(asyncio.run(_echo_times(echo_url)))
    server.should_exit = True
    thread.join()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    serve.run(Echo.bind(), name="echo", route_prefix="/")
    caller = serve.run(Caller.bind(Stage.bind()), name="calls", route_prefix=None)
    serve_url = f"ws://127.0.0.1:{serve_port}/echo"
    results["websocket_echo_serve_proxy"] = _summary(
        asyncio.run(_echo_times(serve_url))
    )
    for name, samples, dtype in (
        ("handle_call_empty", 0, "float32"),
        ("handle_call_4s_float32", 4 * 16000, "float32"),
        ("handle_call_4s_int16", 4 * 16000, "int16"),
    ):
        results[name] = _summary(caller.time_calls.remote(samples, dtype).result())
    serve.shutdown()
    ray.shutdown()

    text = json.dumps(results, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
