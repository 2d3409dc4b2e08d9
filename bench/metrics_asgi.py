"""The same request path as a served model, called as ASGI in this process: metrics on vs off.

No HTTP server and no load generator: each request goes through the gate, the fast path,
the OIP front end, the data plane, the batcher and a real model worker process, exactly as
over HTTP, minus uvicorn. Two apps (metrics on, metrics off) take turns in short blocks;
the figure is CPU time per request (this process plus the model worker), and, immune to
other work on the machine, the Python function calls per request. Without uvicorn's share the
denominator is smaller, so the overhead ratio is an upper bound of what HTTP clients see.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.serving_servers import INFER_PATH, TRIVIAL_BODY
from modelplane.app import create_app
from modelplane.examples import double_onnx
from modelplane.settings import Settings

TICKS = os.sysconf("SC_CLK_TCK")
ALERTS = os.environ.get("BENCH_ALERTS", "0") == "1"


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Lifespan:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        async def receive() -> dict[str, Any]:
            return await self.inbox.get()

        async def send(message: dict[str, Any]) -> None:
            await self.outbox.put(message)

        self.task = asyncio.create_task(self.app({"type": "lifespan"}, receive, send))
        await self.inbox.put({"type": "lifespan.startup"})
        assert (await self.outbox.get())["type"] == "lifespan.startup.complete"

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        await self.task


async def _setup(app: Any) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x/api/v1") as c:
        await c.post("/models", json={"name": "double"})
        r = await c.post("/models/double/versions", data={"format": "onnx"},
                         files={"file": ("m.onnx", double_onnx())})  # fmt: skip
        assert r.status_code == 201, r.text
        r = await c.post("/deployments", json={"name": "double", "model": "double"})
        assert r.status_code == 201, r.text
        for _ in range(600):
            if (await c.get("/deployments/double")).json()["state"] == "ready":
                break
            await asyncio.sleep(0.1)
    dep = app.state.manager.deployments[("default", "double")]
    return int(dep.active.workers[0].pid)


async def _call(app: Any) -> int:
    scope = {
        "type": "http", "method": "POST", "path": INFER_PATH, "raw_path": INFER_PATH.encode(),
        "query_string": b"", "headers": [(b"content-type", b"application/json"),
        (b"content-length", str(len(TRIVIAL_BODY)).encode())], "state": {},
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "scheme": "http",
        "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip
    sent = False
    never = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": TRIVIAL_BODY, "more_body": False}
        await never.wait()  # the fast path's disconnect watcher: cancelled once answered
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(blocks: int, per_block: int) -> dict[str, Any]:
    apps, lifespans, workers = {}, {}, {}
    tmp = Path(tempfile.mkdtemp())
    for label, on in (("on", True), ("off", False)):
        app = create_app(Settings(data_dir=tmp / label, metrics=on, job_slots=0, alerts=ALERTS,
                                  usage_flush_seconds=3600))  # fmt: skip
        lifespans[label] = Lifespan(app)
        await lifespans[label].start()
        workers[label] = await _setup(app)
        apps[label] = app
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    for b in range(blocks):
        for label in ("on", "off") if b % 2 == 0 else ("off", "on"):
            app = apps[label]
            for _ in range(per_block // 10):  # warm
                await _call(app)
            before = time.process_time() + _proc_cpu(workers[label])
            for _ in range(per_block):
                assert await _call(app) == 200
            used = time.process_time() + _proc_cpu(workers[label]) - before
            cpu[label].append(used / per_block * 1e6)
    # Deterministic beside the CPU figures: Python function calls per request (cProfile
    # counts every call and coroutine resumption), which load on the machine cannot move.
    calls: dict[str, float] = {}
    for label, app in apps.items():
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(1000):
            await _call(app)
        profile.disable()
        calls[label] = round(pstats.Stats(profile).total_calls / 1000, 1)  # type: ignore[attr-defined]
    for ls in lifespans.values():
        await ls.stop()
    ratios = [a / b for a, b in zip(cpu["on"], cpu["off"], strict=True)]
    return {
        "blocks": blocks, "requests_per_block": per_block,
        "cpu_us_per_request": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
        "paired_median_ratio_on_over_off": round(statistics.median(ratios), 4),
        "python_calls_per_request": calls,
    }  # fmt: skip


def run(blocks: int = 20, per_block: int = 2000) -> dict[str, Any]:
    return asyncio.run(measure(blocks, per_block))


if __name__ == "__main__":
    print(run())
