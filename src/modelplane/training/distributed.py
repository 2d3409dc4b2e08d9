"""Data-parallel training: N processes, gloo (CPU), DistributedDataParallel.

``run_ddp(spec, data, callbacks, workers=N)`` starts N worker processes (the
``forkserver`` start method: as safe as ``spawn`` in a process that already has
threads, but torch is imported once, in the server, and later runs reuse it).
Each one sets ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``, joins a gloo process group (with ``timeout_s`` on the
rendezvous and every collective, so a missing or dead peer ends the run with
an error instead of a hang) and runs the ordinary ``loop.train``: the model is
wrapped in DDP, a ``DistributedSampler`` gives each rank its shard, and each
rank's batch is ``batch_size // world_size`` so that the *global* batch equals
``hyper.batch_size``. Stop decisions (cancel, runtime, early stopping) are
all-reduced, so all ranks stop at the same step.

Callbacks stay in the parent process (they may hold database connections):
rank 0 gets a stand-in that puts ``progress``/``log`` messages and
checkpoints (``torch.save`` bytes) on a queue; the parent forwards them to the
real callbacks, and sets an event that rank 0 reads as ``should_stop`` when the
real ``should_stop()`` turns true. The final weights come back the same way.

Across machines (like ``torchrun --nnodes M --node_rank K --master_addr H
--master_port P --nproc_per_node N``): call ``run_ddp`` on every machine with
the same spec and data and ``Rendezvous(master_addr=H, master_port=P,
nnodes=M, node_rank=K)``; node K's local rank r is global rank ``K*N + r``
and ``WORLD_SIZE = M*N``. Node 0 runs rank 0, which reports; H:P must be an
address of node 0 the others can reach (set ``GLOO_SOCKET_IFNAME`` where a
machine has several interfaces). Every node returns the (identical) model.
"""

from __future__ import annotations

import io
import os
import queue
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.synchronize import Event
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import distributed as dist
from torch.multiprocessing.spawn import start_processes

from modelplane.training.data import PreparedData
from modelplane.training.export import load_checkpoint
from modelplane.training.loop import Callbacks, NullCallbacks, TrainResult, io_names, train
from modelplane.training.models import build_model
from modelplane.training.spec import TrainSpec

START_METHOD = "forkserver"
PRELOAD = ["modelplane.training.loop", "torch._dynamo"]  # torch.optim imports _dynamo lazily


@dataclass(frozen=True)
class Rendezvous:
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: a free port here (single machine only)
    nnodes: int = 1
    node_rank: int = 0


def _preload() -> list[str]:
    """What the fork server imports once: torch, and the main module when run with ``-m``
    (which every worker re-imports, as multiprocessing does; its imports are then cached)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return PRELOAD + ([spec.name] if spec is not None and spec.name != "__main__" else [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class _QueueCallbacks:
    """Rank 0's callbacks: messages to the parent, which owns the real ones."""

    def __init__(self, messages: Any, stop: Event) -> None:
        self.messages, self.stop = messages, stop

    def progress(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        self.messages.put(("progress", (epoch, total, metrics)))

    def checkpoint(self, state: dict[str, Any]) -> None:
        self.messages.put(("checkpoint", _dumps(state)))

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def log(self, line: str) -> None:
        self.messages.put(("log", line))


def _worker(
    local_rank: int,
    spec: TrainSpec,
    data: PreparedData,
    resume: bytes | None,
    rdv: Rendezvous,
    port: int,
    nproc: int,
    messages: Any,
    stop: Event,
    timeout_s: float,
) -> None:
    rank, world = rdv.node_rank * nproc + local_rank, rdv.nnodes * nproc
    os.environ.update(
        MASTER_ADDR=rdv.master_addr, MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
    )  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    try:
        callbacks: Callbacks = _QueueCallbacks(messages, stop) if rank == 0 else NullCallbacks()
        state = load_checkpoint(resume) if resume is not None else None
        result = train(spec, data, callbacks, state)
        if local_rank == 0:
            final = {
                "model": result.model.state_dict(), "metrics": result.metrics,
                "history": result.history, "epochs_run": result.epochs_run,
                "stop_reason": result.stop_reason,
            }  # fmt: skip
            messages.put(("result", _dumps(final)))
    finally:
        dist.destroy_process_group()


def run_ddp(
    spec: TrainSpec,
    data: PreparedData,
    callbacks: Callbacks,
    workers: int | None = None,
    resume: dict[str, Any] | None = None,
    *,
    rendezvous: Rendezvous | None = None,
    timeout_s: float = 300.0,
) -> TrainResult:
    """Train with ``workers`` (default ``spec.workers``) processes on this machine."""
    nproc, rdv = workers or spec.workers, rendezvous or Rendezvous()
    port = rdv.master_port or free_port()
    ctx = mp.get_context(START_METHOD)
    ctx.set_forkserver_preload(_preload())
    messages, stop = ctx.Queue(), ctx.Event()
    blob = _dumps(resume) if resume is not None else None
    args = (spec, data, blob, rdv, port, nproc, messages, stop, timeout_s)
    procs = start_processes(_worker, args, nproc, join=False, start_method=START_METHOD)  # type: ignore[no-untyped-call]
    try:
        final = _pump(procs, messages, stop, callbacks)
    except BaseException:  # a worker failed (the others are ended), or a callback raised
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
        raise
    if final is None:
        raise RuntimeError("data-parallel workers finished without a result")
    return _result(spec, data, final)


def _pump(procs: Any, messages: Any, stop: Event, callbacks: Callbacks) -> dict[str, Any] | None:
    """Forward rank 0's messages to the callbacks until every worker has exited."""
    final, done = None, False
    while not done:
        done = procs.join(timeout=0.2)  # raises when a worker fails (and ends the others)
        while True:
            try:
                kind, payload = messages.get_nowait()
            except queue.Empty:
                break
            if kind == "progress":
                callbacks.progress(*payload)
            elif kind == "log":
                callbacks.log(payload)
            elif kind == "checkpoint":
                callbacks.checkpoint(load_checkpoint(payload))
            else:
                final = load_checkpoint(payload)
        if not done and callbacks.should_stop():
            stop.set()
    return final


def _result(spec: TrainSpec, data: PreparedData, final: dict[str, Any]) -> TrainResult:
    net = build_model(spec.model, data.encoding)
    net.load_state_dict(final["model"])
    inputs, outputs = io_names(data.encoding)
    return TrainResult(
        model=net.eval(), metrics=final["metrics"], history=final["history"],
        epochs_run=final["epochs_run"], stopped_early=final["stop_reason"] != "completed",
        example_input=torch.from_numpy(data.x_val[:4]), input_names=inputs,
        output_names=outputs, encoding=data.encoding, spec=spec,
        stop_reason=final["stop_reason"],
    )  # fmt: skip


def run_training(
    spec: TrainSpec, data: PreparedData, callbacks: Callbacks, resume: dict[str, Any] | None = None
) -> TrainResult:
    """``train`` in this process when ``spec.workers`` is 1, else ``run_ddp``."""
    if spec.workers > 1:
        return run_ddp(spec, data, callbacks, resume=resume)
    return train(spec, data, callbacks, resume)
