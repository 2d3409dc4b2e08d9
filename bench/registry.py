"""Registry read latency at scale: 100 models x 100 versions on SQLite, over HTTP and in process.

Fills a fresh data dir through ``SqlRegistryStore`` (one real blob, shared by every
version; alias history; some lineage), then starts ``modelplane serve`` in a child
process on a free loopback port and times, one request at a time on one keep-alive
``httpx.Client``: resolve-alias, get-version, one page of versions, one page of
models. The same store calls are timed in process; the HTTP / in-process ratio of
one run is the figure to compare across machines. Target (from the issue): p95 <
20 ms on SQLite for every operation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelplane.db import make_engine, upgrade
from modelplane.examples import double_onnx
from modelplane.registry import ModelRef, SqlRegistryStore, parse_ref
from modelplane.registry.tables import DEFAULT_TENANT
from modelplane.schemas.registry import Artifact, NewVersion, Signature, TensorSpec
from modelplane.settings import Settings
from modelplane.storage import BlobStore

TARGET_P95_MS = 20.0
RESULTS = Path(__file__).parent / "results"
OPS = ("resolve-alias", "get-version", "list-versions", "list-models")
PAGE = 50
T = DEFAULT_TENANT


@dataclass
class Fill:
    models: list[str]
    versions_per_model: int
    production: dict[str, int]  # model -> version the 'production' alias ends on
    seconds: float  # everything: migrations, the blob, rows
    rows_seconds: float  # models, versions, aliases only
    alias_events: int
    parent_links: int


def model_name(i: int) -> str:
    return f"bench-model-{i:04d}"


# -- fill ----------------------------------------------------------------------
def fill(settings: Settings, n_models: int, per_model: int, rng: random.Random) -> Fill:
    """Write every row through ``SqlRegistryStore`` (one transaction per version)."""
    started = time.perf_counter()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    store = SqlRegistryStore(engine)
    blob = double_onnx()
    sha = BlobStore(settings.resolved_store_path()).put_bytes(blob)
    artifact = Artifact(sha256=sha, size=len(blob), packaging="file", filename="double.onnx")
    spec = [TensorSpec(name="x", dtype="float32", shape=[-1, 4])]
    signature = Signature(
        inputs=spec, outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 4])]
    )
    names = [model_name(i) for i in range(n_models)]
    production: dict[str, int] = {}
    events = links = 0
    rows_started = time.perf_counter()
    for i, name in enumerate(names):
        store.create_model(T, name, f"benchmark model {i}", "regression", {"team": f"t{i % 7}"})
        for n in range(1, per_model + 1):
            parents = []
            if n % 10 == 0:  # a fine-tune of the version before it
                parents.append(f"{name}@{n - 1}")
            if n == per_model // 2 and i > 0:  # a distillation from another model
                parents.append(f"{names[i - 1]}@{per_model}")
            links += len(parents)
            new = NewVersion(
                format="onnx",
                artifact=artifact,
                signature=signature,
                params={"lr": round(rng.uniform(1e-4, 1e-2), 6), "epochs": n % 20 + 1},
                metrics={"accuracy": round(rng.random(), 4), "loss": round(rng.random(), 4)},
                tags={"stage": "candidate" if n % 3 else "dev", "run": f"r{n}"},
                description=f"version {n} of {name}",
                parents=parents,
                source={"job": f"train-{i}-{n}"},
            )
            store.create_version(T, name, new, "bench")
        # Two aliases, then ten moves between them, so alias history has rows.
        for alias in ("production", "staging"):
            store.set_alias(T, name, alias, rng.randint(1, per_model), "bench")
        for k in range(10):
            alias = "production" if k % 2 else "staging"
            target = rng.randint(1, per_model)
            store.set_alias(T, name, alias, target, "bench")
            if alias == "production":
                production[name] = target
        events += 12
    done = time.perf_counter()
    engine.dispose()
    return Fill(names, per_model, production, done - started, done - rows_started, events, links)


# -- measuring -----------------------------------------------------------------
def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]


def summarize(samples_ms: list[float], wall_s: float) -> dict[str, float]:
    s = sorted(samples_ms)
    return {
        "p50_ms": round(percentile(s, 0.50), 3),
        "p95_ms": round(percentile(s, 0.95), 3),
        "p99_ms": round(percentile(s, 0.99), 3),
        "max_ms": round(s[-1], 3),
        "mean_ms": round(sum(s) / len(s), 3),
        "rps": round(len(s) / wall_s, 1),
    }


def timed(call: Callable[[int], None], n: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        call(i)
    samples: list[float] = []
    clock = time.perf_counter
    wall = clock()
    for i in range(n):
        t0 = clock()
        call(i)
        samples.append((clock() - t0) * 1000)
    return summarize(samples, clock() - wall)


@dataclass
class Plan:
    """The same random requests for HTTP and in process (seeded)."""

    resolve: list[str]
    get: list[tuple[str, int]]
    lists: list[str]

    @classmethod
    def make(cls, f: Fill, n: int, rng: random.Random) -> Plan:
        ms, vpm = f.models, f.versions_per_model
        return cls(
            resolve=[rng.choice(ms) for _ in range(n)],
            get=[(rng.choice(ms), rng.randint(1, vpm)) for _ in range(n)],
            lists=[rng.choice(ms) for _ in range(n)],
        )


def measure_inprocess(
    settings: Settings, f: Fill, plan: Plan, n: int, warmup: int
) -> dict[str, dict[str, float]]:
    engine = make_engine(settings.resolved_database_url())
    store = SqlRegistryStore(engine)
    k = len(plan.resolve)

    def resolve(i: int) -> None:
        name = plan.resolve[i % k]
        v = store.get_version(T, parse_ref(f"{name}@production"))
        assert v.version == f.production[name]

    def get(i: int) -> None:
        name, number = plan.get[i % k]
        assert store.get_version(T, ModelRef(name, version=number)).version == number

    def list_versions(i: int) -> None:
        items, _token = store.list_versions(T, plan.lists[i % k], limit=PAGE)
        assert len(items) == min(PAGE, f.versions_per_model)

    def list_models(_: int) -> None:
        models, _more = store.list_models(T, limit=PAGE)
        assert len(models) == min(PAGE, len(f.models))

    try:
        calls = (resolve, get, list_versions, list_models)
        return {op: timed(c, n, warmup) for op, c in zip(OPS, calls, strict=True)}
    finally:
        engine.dispose()


def measure_http(url: str, f: Fill, plan: Plan, n: int, warmup: int) -> dict[str, dict[str, float]]:
    k = len(plan.resolve)
    with httpx.Client(base_url=url, timeout=30) as c:

        def ok(path: str) -> Any:
            r = c.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
            return r.json()

        def resolve(i: int) -> None:
            name = plan.resolve[i % k]
            assert ok(f"/api/v1/resolve/{name}@production")["version"] == f.production[name]

        def get(i: int) -> None:
            name, number = plan.get[i % k]
            assert ok(f"/api/v1/models/{name}/versions/{number}")["version"] == number

        def list_versions(i: int) -> None:
            body = ok(f"/api/v1/models/{plan.lists[i % k]}/versions?limit={PAGE}")
            assert len(body["versions"]) == min(PAGE, f.versions_per_model)

        def list_models(_: int) -> None:
            body = ok(f"/api/v1/models?limit={PAGE}")
            assert len(body["models"]) == min(PAGE, len(f.models))

        calls = (resolve, get, list_versions, list_models, lambda _: ok("/healthz"))
        return {op: timed(c, n, warmup) for op, c in zip((*OPS, "healthz"), calls, strict=True)}


# -- the server ----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(data_dir: Path, log_path: Path, log_level: str | None) -> Iterator[str]:
    """``modelplane serve`` in a child process on loopback; terminated on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env["MODELPLANE_DATA_DIR"] = str(data_dir)
    if log_level:
        env["MODELPLANE_LOG_LEVEL"] = log_level
    cmd = [sys.executable, "-m", "modelplane", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log_path)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after 60 s:\n{tail(log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- report --------------------------------------------------------------------
def ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b > 0 else None


def report(result: dict[str, Any]) -> str:
    cfg, fl, ops, env = (
        result["config"],
        result["fill"],
        result["operations"],
        result["environment"],
    )
    out = [
        f"registry: {cfg['models']} models x {cfg['versions_per_model']} versions = "
        f"{cfg['versions']} versions on SQLite; {cfg['requests']} sequential requests per "
        f"operation, {cfg['warmup']} warm-up, one keep-alive httpx client",
        f"fill: {fl['seconds']:.1f} s in all, rows {fl['rows_seconds']:.1f} s "
        f"({fl['versions_per_s']:.0f} versions/s, one SqlRegistryStore.create_version "
        f"transaction each; {fl['alias_events']} alias events, {fl['parent_links']} parent links)",
        f"machine: {env['cpus']} cpus, 1-min load average {env['loadavg_1m_before']} before, "
        f"{env['loadavg_1m_after']} after",
        "",
        f"{'operation':<15}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        f"{'in-proc p50':>13}{'in-proc p95':>13}{'HTTP/in-proc p50':>18}",
    ]
    for op in OPS:
        h, p = ops[op]["http"], ops[op]["inprocess"]
        out.append(
            f"{op:<15}{h['p50_ms']:>9.2f}{h['p95_ms']:>9.2f}{h['p99_ms']:>9.2f}{h['rps']:>9.0f}"
            f"{p['p50_ms']:>13.2f}{p['p95_ms']:>13.2f}{ops[op]['ratio_p50']!s:>17}x"
        )
    floor = result["http_floor_healthz"]
    tgt = result["target"]
    out += [
        f"{'(GET /healthz)':<15}{floor['p50_ms']:>9.2f}{floor['p95_ms']:>9.2f}"
        f"{floor['p99_ms']:>9.2f}{floor['rps']:>9.0f}   <- client + server floor, no registry",
        "",
        f"target p95 < {tgt['p95_ms']:.0f} ms over HTTP: "
        + ", ".join(f"{op} {'PASS' if ok else 'MISS'}" for op, ok in tgt["per_operation"].items())
        + f"  =>  {'PASS' if tgt['pass'] else 'MISS'}",
    ]
    return "\n".join(out)


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench registry", description=__doc__)
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--versions-per-model", type=int, default=100)
    p.add_argument("--requests", type=int, default=1000, help="timed requests per operation")
    p.add_argument("--warmup", type=int, default=None, help="default: min(100, requests)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-log-level", default=None, help="MODELPLANE_LOG_LEVEL for the server")
    p.add_argument("--out", type=Path, default=RESULTS / "registry.json")
    args = p.parse_args(argv)
    if args.models < 1 or args.versions_per_model < 1 or args.requests < 1:
        p.error("--models, --versions-per-model and --requests must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(100, args.requests)
    rng = random.Random(args.seed)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="modelplane-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        print("filling the registry ...", flush=True)
        f = fill(settings, args.models, args.versions_per_model, rng)
        plan = Plan.make(f, args.requests, rng)
        print(f"filled in {f.seconds:.1f} s; timing in process ...", flush=True)
        inproc = measure_inprocess(settings, f, plan, args.requests, warmup)
        print("timing over HTTP ...", flush=True)
        with serve(settings.data_dir, Path(tmp) / "server.log", args.server_log_level) as url:
            http = measure_http(url, f, plan, args.requests, warmup)
    versions = args.models * args.versions_per_model
    operations = {
        op: {
            "http": http[op],
            "inprocess": inproc[op],
            "ratio_p50": ratio(http[op]["p50_ms"], inproc[op]["p50_ms"]),
            "ratio_p95": ratio(http[op]["p95_ms"], inproc[op]["p95_ms"]),
        }
        for op in OPS
    }
    per_op = {op: http[op]["p95_ms"] < TARGET_P95_MS for op in OPS}
    result: dict[str, Any] = {
        "benchmark": "registry",
        "backend": "sqlite",
        "config": {
            "models": args.models,
            "versions_per_model": args.versions_per_model,
            "versions": versions,
            "requests": args.requests,
            "warmup": warmup,
            "page_size": PAGE,
            "seed": args.seed,
            "server_log_level": args.server_log_level or "server default",
        },
        "fill": {
            "seconds": round(f.seconds, 2),
            "rows_seconds": round(f.rows_seconds, 2),
            "versions_per_s": round(versions / f.rows_seconds, 1),
            "alias_events": f.alias_events,
            "parent_links": f.parent_links,
        },
        "operations": operations,
        "http_floor_healthz": http["healthz"],
        "target": {"p95_ms": TARGET_P95_MS, "per_operation": per_op, "pass": all(per_op.values())},
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            # Other work on the machine moves every figure; the healthz floor shows it too.
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    print(report(result))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
