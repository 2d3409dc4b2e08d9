"""Metrics and metering cost: the serving benchmark with instrumentation on vs off.

``python -m bench.metrics [--rounds 5] [--duration 5] [--connections 8]``

1. ``http``: two ``modelplane serve --example`` servers (y = 2x on float32[1,4], OIP v2
   JSON), one with ``MODELPLANE_METRICS=false``, both pinned to core 0 (their model
   workers inherit it) and loaded in turns by the load generator of bench/serving.py
   (wrk when installed, else an httpx loop). Per round and server: requests/s, p50/p99,
   and the server's CPU time per request (all its processes), which other work on a shared
   machine moves far less than requests/s. Printed: each figure's best round and the ratio
   on/off. Target: < 5 % difference.
2. ``inprocess``: the instrumentation alone, in microseconds per request: the fast-path
   wrapper (ticket, status and byte counting, counter + histogram, usage record) around a
   stub handler, and the batcher's per-batch accounting, each against the bare stub. Its
   share of the server's CPU per request (from 1.) is the floor of what metrics cost.
3. ``asgi`` (bench/metrics_asgi.py): the whole request path (gate, fast path, OIP,
   data plane, batcher, a real model worker) called as ASGI in this process, two apps
   (on, off) in alternating blocks; CPU per request and the median of paired ratios.
   Alert evaluation is off in both (``BENCH_ALERTS=1`` turns it on) so that the figure
   is the instrumentation's.

Results go to ``bench/results/metrics.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.serving_load import have_wrk, run_load
from bench.serving_report import write_json
from bench.serving_servers import (
    INFER_PATH,
    TRIVIAL_BODY,
    Served,
    free_port,
    pin,
    process,
    trivial_ok,
)

RESULTS = Path(__file__).parent / "results"
SERVER_CORE, CLIENT_CORE = 0, 1


@contextlib.contextmanager
def _server(data_dir: Path, log: Path, metrics: bool, alerts: bool = True) -> Any:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env.update(
        MODELPLANE_DATA_DIR=str(data_dir), MODELPLANE_LOG_LEVEL="warning",
        MODELPLANE_METRICS="true" if metrics else "false", MODELPLANE_JOB_SLOTS="0",
        MODELPLANE_ALERTS="true" if alerts else "false",
    )  # fmt: skip
    cmd = [*pin(SERVER_CORE), sys.executable, "-m", "modelplane", "serve", "--example"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    name = f"modelplane metrics={'on' if metrics else 'off'}"
    with process(name, cmd, log, lambda: trivial_ok(url), env=env, timeout=180) as proc:
        yield Served(url, proc.pid)


def measure_http(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    use_wrk = have_wrk() and not args.no_wrk
    rows: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with contextlib.ExitStack() as stack:
        servers = {
            label: stack.enter_context(
                _server(tmp / label, tmp / f"{label}.log", label == "on", not args.no_alerts)
            )
            for label in rows
        }
        for r in range(args.rounds):
            order = list(rows) if r % 2 == 0 else list(reversed(rows))  # no side goes first always
            for label in order:
                s = servers[label]
                run_load(s.url + INFER_PATH, TRIVIAL_BODY, args.connections, args.warmup,
                         CLIENT_CORE, use_wrk)  # fmt: skip
                cpu = s.cpu_seconds()
                row = run_load(s.url + INFER_PATH, TRIVIAL_BODY, args.connections,
                               args.duration, CLIENT_CORE, use_wrk).row()  # fmt: skip
                used = s.cpu_seconds() - cpu
                row["server_cpu_us_per_request"] = round(used * 1e6 / max(row["requests"], 1), 1)
                rows[label].append(row)
                print(f"  round {r + 1} metrics {label:<3} {row['rps']:>8,.0f} rps  "
                      f"p50 {row['p50_ms']:.3f}  p99 {row['p99_ms']:.3f} ms  "
                      f"{row['server_cpu_us_per_request']:.0f} cpu-us/req  "
                      f"load {row['loadavg_1m']}", flush=True)  # fmt: skip
    best = {
        label: {
            "rps": max(x["rps"] for x in runs),
            "p50_ms": min(x["p50_ms"] for x in runs),
            "p99_ms": min(x["p99_ms"] for x in runs),
            "server_cpu_us_per_request": min(x["server_cpu_us_per_request"] for x in runs),
            "median_rps": statistics.median(x["rps"] for x in runs),
        }
        for label, runs in rows.items()
    }
    ratios = {k: round(best["on"][k] / best["off"][k], 4) for k in best["on"] if best["off"][k]}
    # Rounds are taken in pairs, one right after the other: the median of the pairs' ratios
    # is the figure least moved by what else the machine does meanwhile.
    paired = {
        k: round(statistics.median(a[k] / b[k] for a, b in zip(rows["on"], rows["off"],
                                                                 strict=True) if b[k]), 4)
        for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request")
    }  # fmt: skip
    return {"tool": "wrk" if use_wrk else "httpx", "rounds": rows, "best": best,
            "ratio_on_over_off": ratios, "paired_median_ratio_on_over_off": paired}  # fmt: skip


# -- the instrumentation alone -------------------------------------------------------
async def _bench_wrapper(n: int) -> dict[str, float]:
    from modelplane.api.instrument import Instrument
    from modelplane.db import make_engine
    from modelplane.monitoring.metrics import Metrics
    from modelplane.monitoring.ticket import TICKET
    from modelplane.monitoring.usage import UsageMeter

    meter = UsageMeter(
        make_engine(f"sqlite:///{tempfile.mkdtemp()}/usage.db"), flush_seconds=3600
    )  # never flushed here
    metrics = Metrics()
    instrument = Instrument(metrics, meter)
    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"x" * 120}
    request = {"type": "http.request", "body": TRIVIAL_BODY, "more_body": False}
    scope = {"type": "http", "method": "POST", "path": INFER_PATH, "headers": [], "state": {}}

    async def receive() -> dict[str, Any]:
        return request

    async def send(_: Any) -> None:
        return None

    async def stub(scope: Any, receive: Any, send: Any, handler: Any) -> None:
        await receive()
        ticket = TICKET.get()
        if ticket is not None:  # what the data plane, manager and batcher fill in
            ticket.deployment, ticket.version = "double", "1"
            ticket.rows, ticket.compute_seconds = 1, 1e-5
        await send(start)
        await send(body)

    async def bare() -> None:
        for _ in range(n):
            await stub(scope, receive, send, None)

    async def wrapped() -> None:
        for _ in range(n):
            await instrument.inference(stub, scope, receive, send, None)

    results: dict[str, float] = {}
    for name, fn in (("bare", bare), ("wrapped", wrapped)):
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            await fn()
            best = min(best, time.perf_counter() - t)
        results[name] = best / n * 1e6
    return results


def _bench_batch(n: int) -> float:
    """µs per batch of one request: the batcher's accounting (size, model time, ticket)."""
    from modelplane.monitoring.metrics import Metrics
    from modelplane.monitoring.ticket import Ticket
    from modelplane.serving.batcher import _account, _Item

    monitor = Metrics().batch_monitor("default", "double", "1")
    assert monitor is not None
    item = _Item({}, 1, (), None, 0.0, ticket=Ticket())  # type: ignore[arg-type]
    batch = [item]
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            _account(monitor, batch, 1e-5)
            monitor.queue_wait.observe(1e-4)
            monitor.queue_depth.set(0)
            monitor.queue_depth.set(0)
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def measure_inprocess(n: int) -> dict[str, float]:
    wrap = asyncio.run(_bench_wrapper(n))
    batch = _bench_batch(n)
    return {
        "stub_us": round(wrap["bare"], 3),
        "stub_instrumented_us": round(wrap["wrapped"], 3),
        "fast_path_wrapper_us": round(wrap["wrapped"] - wrap["bare"], 3),
        "batcher_accounting_us": round(batch, 3),
        "total_us_per_request": round(wrap["wrapped"] - wrap["bare"] + batch, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--iterations", type=int, default=20_000)
    p.add_argument("--no-wrk", action="store_true", help="Use the httpx loop even with wrk.")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--no-alerts", action="store_true", help="Alert evaluation off in both.")
    p.add_argument("--asgi-blocks", type=int, default=16, help="0: skip the ASGI part.")
    p.add_argument("--asgi-requests", type=int, default=1500, help="Requests per block.")
    args = p.parse_args(argv)
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    print("instrumentation alone (in process) ...", flush=True)
    out["inprocess"] = measure_inprocess(args.iterations)
    print(f"  {out['inprocess']}", flush=True)
    if args.asgi_blocks:
        from bench.metrics_asgi import run as run_asgi

        print("the request path as ASGI in process, metrics on vs off ...", flush=True)
        out["asgi"] = run_asgi(args.asgi_blocks, args.asgi_requests)
        print(f"  {out['asgi']}", flush=True)
    if not args.skip_http:
        with tempfile.TemporaryDirectory() as tmp:
            out["http"] = measure_http(args, Path(tmp))
        best, ratio = out["http"]["best"], out["http"]["ratio_on_over_off"]
        print(f"\nbest of {args.rounds} rounds ({out['http']['tool']}, "
              f"{args.connections} connections):")  # fmt: skip
        for label in ("on", "off"):
            b = best[label]
            print(
                f"  metrics {label:<3} {b['rps']:>8,.0f} rps  p50 {b['p50_ms']:.3f} ms  "
                f"p99 {b['p99_ms']:.3f} ms  {b['server_cpu_us_per_request']:.0f} cpu-us/req"
            )
        print(
            f"  on/off: rps {ratio['rps']:.3f}  p50 {ratio['p50_ms']:.3f}  "
            f"p99 {ratio['p99_ms']:.3f}  cpu/req {ratio['server_cpu_us_per_request']:.3f}"
        )
        pm = out["http"]["paired_median_ratio_on_over_off"]
        print(f"  on/off, median of paired rounds: rps {pm['rps']:.3f}  p50 {pm['p50_ms']:.3f}  "
              f"p99 {pm['p99_ms']:.3f}  cpu/req {pm['server_cpu_us_per_request']:.3f}")  # fmt: skip
        cpu_off = best["off"]["server_cpu_us_per_request"]
        share = out["inprocess"]["total_us_per_request"] / cpu_off if cpu_off else 0.0
        out["instrumentation_share_of_server_cpu"] = round(share, 4)
        print(f"  instrumentation alone: {out['inprocess']['total_us_per_request']:.2f} us "
              f"per request = {share:.1%} of the server's CPU per request")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "metrics.json", out)
    return out


if __name__ == "__main__":
    main()
