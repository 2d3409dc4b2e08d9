"""What the job system costs a training run, and what a second data-parallel worker buys.

1. Job-system overhead. One training (an MLP on a synthetic covertype-like
   table: 54 numeric features, 7 classes) runs bare in this process
   (``prepare`` + ``train`` with ``NullCallbacks``) and as a ``train`` job on a
   real server (``python -m modelplane serve`` in a temp data dir, its job
   runner on). Reported, for each repeat (bare and job runs interleaved):

   - ``job_submit_to_succeeded_s``: from ``POST /jobs`` until the client sees
     ``succeeded`` (queue pickup, the job process starting and importing
     torch, loading the dataset, training, ONNX export, registration);
   - ``job_run_s``: the job's own ``started_at`` -> ``finished_at``;
   - ``job_loop_s``: the training loop inside the job (the ``elapsed`` of its
     final checkpoint: progress reports and checkpoints included, process
     start, data loading, export and registration excluded), compared with
     ``bare_loop_s``, the same loop with ``NullCallbacks``.

   Overhead "including" is submit->succeeded over bare prepare + train;
   "excluding" is the job's loop over the bare loop. Target: < 10 %.
2. Data parallel: the same training with 1 and with 2 DDP workers (gloo) at
   the same global batch: final validation loss of each (they should agree:
   each step sees the same examples) and wall times. On a 2-core machine a
   second worker has no core of its own; the figure is reported as measured.

Every training process runs on ``--threads`` torch threads (default 1; the
job process gets ``OMP_NUM_THREADS``; DDP workers take cores // workers, 1
here): two threads that meet at every op lose badly to other load on a
2-core machine, a single one does not. ``python -m bench training [--quick]
[--repeats N] [--threads N] [--out PATH]``; writes ``bench/results/training.json``.
The machine's 1-minute load average is printed with the results: other work
on the machine makes every figure noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from bench.registry import serve
from modelplane.training import TrainSpec, prepare
from modelplane.training.loop import NullCallbacks, train

RESULTS = Path(__file__).parent / "results"
TARGET_OVERHEAD = 0.10


@dataclass(frozen=True)
class Size:
    rows: int
    epochs: int
    hidden: list[int]
    batch: int


FULL = Size(rows=100_000, epochs=14, hidden=[512, 256], batch=128)  # ~25 s on 1 quiet core
QUICK = Size(rows=3_000, epochs=2, hidden=[32], batch=64)


def covertype_like(rows: int, seed: int = 0) -> pd.DataFrame:
    """Numeric features on different scales, 7 unbalanced classes, like UCI covertype."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=54, n_informative=24, n_redundant=10, n_classes=7,
        n_clusters_per_class=2, weights=[0.36, 0.49, 0.06, 0.005, 0.016, 0.03, 0.039],
        class_sep=1.2, random_state=seed,
    )  # fmt: skip
    scales = np.random.default_rng(seed).uniform(0.1, 1000.0, size=x.shape[1])
    frame = pd.DataFrame((x * scales).astype(np.float32), columns=[f"f{i}" for i in range(54)])
    frame["cover"] = [f"type{c + 1}" for c in y]
    return frame


def job_spec(size: Size, workers: int = 1, seed: int = 0) -> dict[str, Any]:
    return {
        "model": {"architecture": "mlp", "hidden": size.hidden},
        "hyper": {"epochs": size.epochs, "batch_size": size.batch, "learning_rate": 1e-3,
                  "optimizer": "adam", "seed": seed},
        "data": {"target": "cover"},
        "resources": {"workers": workers},
    }  # fmt: skip


def train_spec(size: Size, workers: int = 1, seed: int = 0) -> TrainSpec:
    spec = job_spec(size, workers, seed)
    return TrainSpec(model=spec["model"], hyper=spec["hyper"], data=spec["data"], workers=workers)


class _LoopTime(NullCallbacks):
    """NullCallbacks that keep the loop's own ``elapsed`` from its (already copied) checkpoints."""

    elapsed = 0.0

    def checkpoint(self, state: dict[str, Any]) -> None:
        self.elapsed = float(state["elapsed"])


def warm_up(frame: pd.DataFrame) -> None:
    """One tiny run first: lazy imports (torch.optim loads torch._dynamo) are paid once here,
    as a long-lived process pays them once; a job process pays them in every job."""
    size = Size(rows=200, epochs=1, hidden=[8], batch=64)
    train(train_spec(size), prepare(train_spec(size), frame.iloc[:200]), NullCallbacks())


def bare(size: Size, frame: pd.DataFrame) -> dict[str, float]:
    spec = train_spec(size)
    cpu0, t0 = time.process_time(), time.perf_counter()
    data = prepare(spec, frame)
    t1 = time.perf_counter()
    callbacks = _LoopTime()
    result = train(spec, data, callbacks)
    t2, cpu2 = time.perf_counter(), time.process_time()
    return {
        "bare_prepare_s": t1 - t0, "bare_train_s": t2 - t1, "bare_total_s": t2 - t0,
        "bare_loop_s": callbacks.elapsed, "bare_cpu_s": cpu2 - cpu0,
        "bare_val_loss": result.metrics["val_loss"],
    }  # fmt: skip


def _job_process(job_id: str) -> int | None:
    """The pid of the job's own process (``python -m modelplane.jobs.child JOB_ID ...``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"modelplane.jobs.child" in argv and job_id.encode() in argv:
            return int(entry.name)
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux ``/proc``); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def job_loop_seconds(data_dir: Path, job_id: str) -> float:
    """The ``elapsed`` of the job's final checkpoint, read from the server's data dir."""
    import torch

    from modelplane.db import make_engine
    from modelplane.jobs.store import JobStore
    from modelplane.settings import Settings
    from modelplane.storage import BlobStore

    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.resolved_database_url())
    try:
        digest = JobStore(engine).checkpoint_of(job_id)
        raw = BlobStore.from_settings(settings).open_path(digest).read_bytes()
    finally:
        engine.dispose()
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return float(state["elapsed"])


def as_job(api: httpx.Client, size: Size, data_dir: Path, n: int) -> dict[str, float]:
    spec = {"kind": "train", "dataset": "covertype", **job_spec(size),
            "output": {"model": f"covertype-{n}"}}  # fmt: skip
    t0 = time.perf_counter()
    r = api.post("/jobs", json=spec)
    r.raise_for_status()
    job_id = r.json()["id"]
    pid, cpu = None, float("nan")  # the job process's CPU time: its last sample before exit
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        pid = pid or _job_process(job_id)
        if pid is not None:
            cpu = _cpu_seconds(pid) or cpu
        time.sleep(0.1)  # polling faster would take CPU from the job on a small machine
    waited = time.perf_counter() - t0
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['state']}: {job['error']}")
    return {
        "job_submit_to_succeeded_s": waited,
        "job_queue_s": _seconds(job["created_at"], job["started_at"]),
        "job_run_s": _seconds(job["started_at"], job["finished_at"]),
        "job_loop_s": job_loop_seconds(data_dir, job_id),
        "job_cpu_s": cpu,
        "job_val_loss": job["result"]["metrics"]["val_loss"],
    }


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for what starts inside the block (the server), then restore."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def overhead(
    frame: pd.DataFrame, size: Size, repeats: int, threads: int, tmp: Path
) -> dict[str, Any]:
    data_dir = tmp / "data"
    runs: list[dict[str, float]] = []
    with contextlib.ExitStack() as stack:
        with _environ(OMP_NUM_THREADS=str(threads)):  # the job process: as many as bare runs on
            url = stack.enter_context(serve(data_dir, tmp / "server.log", "warning"))
        api = stack.enter_context(httpx.Client(base_url=f"{url}/api/v1", timeout=60))
        body = frame.to_csv(index=False).encode()
        r = api.post("/datasets", data={"name": "covertype"},
                     files={"file": ("covertype.csv", body)})  # fmt: skip
        r.raise_for_status()
        for n in range(repeats):
            run = bare(size, frame)
            run.update(as_job(api, size, data_dir, n))
            runs.append(run)
            shown = ", ".join(f"{k}={v:.3f}" for k, v in run.items())
            print(f"  repeat {n + 1}/{repeats}: {shown}", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    including = med["job_submit_to_succeeded_s"] / med["bare_total_s"] - 1
    excluding = med["job_loop_s"] / med["bare_loop_s"] - 1
    return {
        "runs": runs, "median": med,
        "overhead_including": including,  # process start, data load, export, registration
        "overhead_job_run": med["job_run_s"] / med["bare_total_s"] - 1,
        "overhead_excluding": excluding,  # the training loop only: progress + checkpoints
        # CPU seconds of the job process over the bare run's: the figure least moved by load
        "overhead_cpu": med["job_cpu_s"] / med["bare_cpu_s"] - 1,
        "target": TARGET_OVERHEAD,
        "pass_including": including < TARGET_OVERHEAD,
        "pass_excluding": excluding < TARGET_OVERHEAD,
    }  # fmt: skip


def _fit(frame: pd.DataFrame, size: Size, workers: int, seed: int = 0) -> dict[str, Any]:
    from modelplane.training.distributed import run_ddp

    spec = train_spec(size, workers, seed)
    data = prepare(spec, frame)
    t0 = time.perf_counter()
    if workers == 1:
        result = train(spec, data, NullCallbacks())
    else:
        result = run_ddp(spec, data, NullCallbacks(), workers=workers)
    wall = time.perf_counter() - t0
    loop = sum(h["seconds"] for h in result.history)  # epochs only: no process start-up
    curve = [h["val_loss"] for h in result.history]
    print(f"  {workers} worker(s), seed {seed}: {wall:.2f} s ({loop:.2f} s in epochs), val_loss "
          f"{result.metrics['val_loss']:.6f}, accuracy {result.metrics['accuracy']:.4f}",
          flush=True)  # fmt: skip
    return {
        "wall_s": wall, "epochs_s": loop, "val_loss": result.metrics["val_loss"],
        "accuracy": result.metrics["accuracy"], "epochs": result.epochs_run,
        "val_loss_by_epoch": curve,
    }  # fmt: skip


def data_parallel(frame: pd.DataFrame, size: Size, threads: int) -> dict[str, Any]:
    """1 and 2 workers at one global batch; and 1 worker with another seed, for scale."""
    one, two = _fit(frame, size, 1), _fit(frame, size, 2)
    other_seed = _fit(frame, size, 1, seed=1)
    return {
        "1": one, "2": two, "1_seed1": other_seed,
        "val_loss_diff": two["val_loss"] - one["val_loss"],
        "val_loss_diff_epoch1": two["val_loss_by_epoch"][0] - one["val_loss_by_epoch"][0],
        "val_loss_seed_spread": other_seed["val_loss"] - one["val_loss"],
        "speedup_2_over_1": one["wall_s"] / two["wall_s"],
        "epochs_speedup_2_over_1": one["epochs_s"] / two["epochs_s"],
        "global_batch": size.batch,
        "threads": {"1": threads, "2": max(1, (os.cpu_count() or 1) // 2)},  # as run_ddp sets
    }  # fmt: skip


def report(result: dict[str, Any]) -> str:
    env, ov, dp = result["environment"], result["job_overhead"], result["data_parallel"]
    med = ov["median"]
    size = result["config"]
    lines = [
        f"training benchmark ({'quick' if size['quick'] else 'full'}): {size['rows']} rows, "
        f"mlp {size['hidden']}, {size['epochs']} epochs, batch {size['batch']}",
        f"machine: {env['cpus']} cpus, 1-min load average {env['loadavg_1m_before']} before, "
        f"{env['loadavg_1m_after']} after (noisy: other work shares these cores)",
        "",
        f"job-system overhead (median of {len(ov['runs'])}):",
        f"  bare prepare + train     {med['bare_total_s']:8.2f} s   "
        f"(loop {med['bare_loop_s']:.2f} s)",
        f"  job submit -> succeeded  {med['job_submit_to_succeeded_s']:8.2f} s   "
        f"{ov['overhead_including']:+.1%}  <- including process start, load, export, register",
        f"  job started -> finished  {med['job_run_s']:8.2f} s   {ov['overhead_job_run']:+.1%}"
        f"  (queue wait {med['job_queue_s']:.2f} s; outside the loop "
        f"{med['job_run_s'] - med['job_loop_s']:.2f} s: start, torch import, load, export, "
        "register)",
        f"  job training loop        {med['job_loop_s']:8.2f} s   "
        f"{ov['overhead_excluding']:+.1%}  <- excluding them (progress + checkpoints only)",
        f"  CPU seconds: bare {med['bare_cpu_s']:.2f}, job process {med['job_cpu_s']:.2f}   "
        f"{ov['overhead_cpu']:+.1%}  <- least moved by other load (torch import, export incl.)",
        f"  target < {ov['target']:.0%}: including "
        f"{'PASS' if ov['pass_including'] else 'MISS'}, excluding "
        f"{'PASS' if ov['pass_excluding'] else 'MISS'}; val_loss bare "
        f"{med['bare_val_loss']:.6f}, job {med['job_val_loss']:.6f}",
        "",
        f"data parallel (global batch {dp['global_batch']}; torch threads: 1 worker "
        f"{dp['threads']['1']}, 2 workers {dp['threads']['2']} each):",
        f"  1 worker   {dp['1']['wall_s']:8.2f} s wall, {dp['1']['epochs_s']:8.2f} s in epochs"
        f"   val_loss {dp['1']['val_loss']:.6f}",
        f"  2 workers  {dp['2']['wall_s']:8.2f} s wall, {dp['2']['epochs_s']:8.2f} s in epochs"
        f"   val_loss {dp['2']['val_loss']:.6f}",
        f"  1 worker, seed 1   val_loss {dp['1_seed1']['val_loss']:.6f}   <- the scale of "
        "'different but equally good'",
        f"  val_loss difference 2 - 1: after epoch 1 {dp['val_loss_diff_epoch1']:+.2e}, final "
        f"{dp['val_loss_diff']:+.2e} (seed 1 - seed 0: {dp['val_loss_seed_spread']:+.2e})",
        "  (each step sees the same examples; float sums in another order drift apart over "
        "many Adam steps)",
        f"  speed-up 2 over 1: "
        f"{dp['speedup_2_over_1']:.2f}x wall, {dp['epochs_speedup_2_over_1']:.2f}x in epochs, "
        f"on {env['cpus']} cores",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench training", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds): for smoke tests")
    p.add_argument("--repeats", type=int, default=None, help="bare/job pairs (default 3; quick 1)")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per training process (bare, job, each DDP worker; default 1: "
        "threads that wait on each other at every op suffer most from other load)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "training.json")
    ns, _ = p.parse_known_args(argv)  # other benchmarks' options may be passed along
    return ns


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    size = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    import torch

    load_before = os.getloadavg()[0]
    frame = covertype_like(size.rows)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        warm_up(frame)
        with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
            print("job-system overhead:", flush=True)
            job_overhead = overhead(frame, size, repeats, args.threads, Path(tmp))
        print("data parallel:", flush=True)
        ddp = data_parallel(frame, size, args.threads)
    finally:
        torch.set_num_threads(previous)

    result = {
        "benchmark": "training",
        "config": {"quick": args.quick, "rows": size.rows, "epochs": size.epochs,
                   "hidden": size.hidden, "batch": size.batch, "repeats": repeats},
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__, "torch_threads": args.threads,
                        "loadavg_1m_before": round(load_before, 2),
                        "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "job_overhead": job_overhead,
        "data_parallel": ddp,
    }  # fmt: skip
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
