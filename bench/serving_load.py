"""Load generators for bench/serving.py.

- ``wrk`` (C, one thread, pinned to its own core): what the figures in
  shared/PEERS.md were taken with; its client cost is small and off the server's core.
- an httpx fallback where wrk is missing (the smoke test, a laptop without it):
  N asyncio tasks on one ``httpx.AsyncClient``. Its own overhead is far larger, so
  its figures are only for checking the harness, never for comparing with wrk's.
- ``embed_load``: the embeddings client, 32 tasks on one ``httpx.AsyncClient``,
  one sentence per request, bounded by count and time; it reports its own CPU use,
  since it shares the machine's two cores with the server.

Every run is bounded: wrk by ``-d`` (and a subprocess timeout), the loops by a
request count and a deadline.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.serving_servers import pin

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


@dataclass
class Load:
    tool: str  # "wrk" or "httpx"
    connections: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    loadavg_1m: float  # just before the run: other work on the machine moves every figure

    def row(self) -> dict[str, Any]:
        return asdict(self)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)] if sorted_ms else math.nan


# -- wrk -------------------------------------------------------------------------
def _lua(body: bytes) -> str:
    text = body.decode()
    if "]]" in text:
        raise ValueError("request body must not contain ']]' (Lua long string)")
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [[{text}]]\n"
    )


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests, rps, p50/p90/p99 (ms) and errors from ``wrk --latency`` output."""
    found: dict[str, float] = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+{_DURATION}\s*$", out, re.M)
        if m is None:
            raise ValueError(f"no {q}% latency in wrk output:\n{out}")
        found[f"p{q}_ms"] = _ms(m.group(1), m.group(2))
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None or rps is None:
        raise ValueError(f"no request count in wrk output:\n{out}")
    found["requests"] = int(m.group(1))
    found["seconds"] = _ms(m.group(2), m.group(3)) / 1000
    found["rps"] = float(rps.group(1))
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    found["errors"] = errors
    return found


def run_wrk(url: str, body: bytes, connections: int, seconds: float, core: int | None) -> Load:
    """``taskset -c CORE wrk -t1 -cN -dS --latency -s post.lua URL``."""
    with tempfile.TemporaryDirectory(prefix="modelplane-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_lua(body))
        duration = max(1, round(seconds))
        cmd = [*pin(core), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
        load = loadavg()
        done = subprocess.run(
            [*cmd, "-s", str(script), url],
            capture_output=True, text=True, timeout=duration + 60, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    f = parse_wrk(done.stdout)
    return Load(
        "wrk", connections, round(f["seconds"], 2), int(f["requests"]), int(f["errors"]),
        round(f["rps"], 1), round(f["p50_ms"], 3), round(f["p90_ms"], 3), round(f["p99_ms"], 3),
        load,
    )  # fmt: skip


# -- httpx fallback ------------------------------------------------------------------
async def _httpx_load(
    url: str, body: bytes, connections: int, seconds: float, max_requests: int
) -> tuple[list[float], int, float]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"content-type": "application/json"}
    samples: list[float] = []
    errors = 0
    sent = 0
    clock = time.perf_counter
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        started = clock()
        deadline = started + seconds

        async def one_client() -> None:
            nonlocal errors, sent
            while sent < max_requests and clock() < deadline:
                sent += 1
                t0 = clock()
                try:
                    r = await client.post(url, content=body, headers=headers)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                samples.append((clock() - t0) * 1000)
                errors += not ok

        await asyncio.gather(*(one_client() for _ in range(connections)))
        wall = clock() - started
    return samples, errors, wall


def run_httpx(
    url: str, body: bytes, connections: int, seconds: float, max_requests: int = 200_000
) -> Load:
    load = loadavg()
    samples, errors, wall = asyncio.run(_httpx_load(url, body, connections, seconds, max_requests))
    s = sorted(samples)
    return Load(
        "httpx", connections, round(wall, 2), len(s), errors, round(len(s) / wall, 1),
        round(percentile(s, 0.5), 3), round(percentile(s, 0.9), 3), round(percentile(s, 0.99), 3),
        load,
    )  # fmt: skip


def run_load(
    url: str, body: bytes, connections: int, seconds: float, core: int | None, use_wrk: bool
) -> Load:
    if use_wrk:
        return run_wrk(url, body, connections, seconds, core)
    return run_httpx(url, body, connections, seconds)


# -- embeddings client ----------------------------------------------------------------
@dataclass
class EmbedLoad:
    concurrency: int
    seconds: float
    requests: int
    sentences: int
    errors: int
    sentences_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_share: float  # CPU seconds this (client) process used per wall second
    loadavg_1m: float


async def _embed_load(
    url: str, bodies: list[bytes], concurrency: int, seconds: float, max_requests: int
) -> EmbedLoad:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    samples: list[float] = []
    errors = 0
    next_body = 0
    first_error = ""
    clock = time.perf_counter
    load = loadavg()
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        cpu0, started = time.process_time(), clock()
        deadline = started + seconds

        async def one_client() -> None:
            nonlocal errors, next_body, first_error
            while next_body < max_requests and clock() < deadline:
                body = bodies[next_body % len(bodies)]
                next_body += 1
                t0 = clock()
                try:
                    r = await client.post(url, content=body, headers=headers)
                    ok = r.status_code == 200
                    if not ok and not first_error:
                        first_error = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok = False
                    first_error = first_error or repr(exc)
                if ok:
                    samples.append((clock() - t0) * 1000)
                errors += not ok

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        wall, cpu = clock() - started, time.process_time() - cpu0
    if errors and not samples:
        raise RuntimeError(f"every embeddings request failed, first: {first_error}")
    s = sorted(samples)
    return EmbedLoad(
        concurrency, round(wall, 2), len(s) + errors, len(s), errors, round(len(s) / wall, 1),
        round(percentile(s, 0.5), 2), round(percentile(s, 0.99), 2), round(cpu / wall, 2), load,
    )  # fmt: skip


def embed_load(
    url: str, bodies: list[bytes], concurrency: int, seconds: float, max_requests: int
) -> EmbedLoad:
    """``concurrency`` clients, each one request (one sentence) at a time, until either bound."""
    return asyncio.run(_embed_load(url, bodies, concurrency, seconds, max_requests))
