"""The training loop: build, (resume), then epochs of shuffle -> step -> validate -> report.

The loop knows nothing of jobs. It reports through ``Callbacks`` (the job
runner's context implements them) and hands out checkpoints as plain dicts
(tensors and plain containers only, so ``torch.load(weights_only=True)`` reads
them back) holding::

    format, epoch (completed), model, optimizer, scheduler (state_dicts),
    rng (torch CPU generator state), best {loss, epoch, bad_epochs, model|None},
    history (one dict per epoch), elapsed (seconds), spec, encoding

Passing such a dict as ``resume`` continues the run exactly: shuffling is
seeded by (seed, epoch) and dropout by the saved generator state, so 3 epochs
+ resume to 6 equals 6 straight. When ``torch.distributed`` is initialised
(see ``distributed.py``) the same function trains one data-parallel rank.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from modelplane.training.data import Encoding, PreparedData
from modelplane.training.metrics import Objective, baseline, evaluate
from modelplane.training.models import build_model
from modelplane.training.optim import l1_penalty, make_optimizer, make_scheduler
from modelplane.training.spec import Hyper, TrainSpec

CHECK_EVERY = 32  # batches between cancel/runtime checks inside an epoch
STOP_REASONS = ("completed", "early_stopping", "max_runtime", "cancelled")


def stop_code(
    hyper: Hyper, callbacks: Callbacks, started: float, best: dict[str, Any],
    epoch_end: bool = False,
) -> int:  # fmt: skip
    """Why to stop now, as an index into STOP_REASONS (0: go on); early stopping is judged
    only at an epoch's end."""
    if callbacks.should_stop():
        return 3
    if hyper.max_runtime_seconds and time.monotonic() - started > hyper.max_runtime_seconds:
        return 2
    if epoch_end and hyper.early_stopping_patience:
        return 1 if best["bad_epochs"] >= hyper.early_stopping_patience else 0
    return 0


def update_best(
    best: dict[str, Any], hyper: Hyper, epoch: int, val_loss: float, net: nn.Module
) -> dict[str, Any]:
    """``best`` after an epoch: a new best (with its weights when early stopping may restore
    them) or one more epoch without improvement."""
    if val_loss < best["loss"]:
        weights = copy.deepcopy(net.state_dict()) if hyper.early_stopping_patience else None
        return {"loss": val_loss, "epoch": epoch, "bad_epochs": 0, "model": weights}
    best["bad_epochs"] += 1
    return best


class Callbacks(Protocol):
    def progress(self, epoch: int, total: int, metrics: dict[str, float]) -> None: ...

    def checkpoint(self, state: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool: ...

    def log(self, line: str) -> None: ...


class NullCallbacks:
    """Callbacks that ignore everything (other ranks, tests, notebooks)."""

    def progress(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        pass

    def checkpoint(self, state: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def log(self, line: str) -> None:
        pass


@dataclass
class TrainResult:
    model: nn.Module  # raw inputs -> logits (classification) or target-unit values
    metrics: dict[str, float]  # validation metrics, baseline_* and train_loss
    history: list[dict[str, float]]
    epochs_run: int
    stopped_early: bool
    example_input: Tensor
    input_names: list[str]
    output_names: list[str]
    encoding: Encoding
    spec: TrainSpec
    stop_reason: str = "completed"  # one of STOP_REASONS
    extra: dict[str, Any] = field(default_factory=dict)


def io_names(enc: Encoding) -> tuple[list[str], list[str]]:
    """Input and output names of the exported model."""
    out = {"classification": "probabilities", "regression": "prediction"}.get(enc.task)
    return ["input_ids" if enc.kind == "text" else "input"], [out or "reconstruction"]


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _agree(code: int, world: int) -> int:
    """The largest stop code of all ranks, so every rank stops at the same step."""
    if world == 1:
        return code
    t = torch.tensor([code])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _mean(value: float, world: int) -> float:
    """The mean of a value over all ranks (each rank's training loss covers its shard only)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


def run_epoch(
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    l1: float,
    check: Callable[[], int] | None = None,
) -> tuple[float, int]:
    """One pass over (x, y) in order; the mean data loss, and ``check``'s code if it stopped it."""
    model.train()
    total = 0.0
    for step, start in enumerate(range(0, len(x), batch_size)):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        loss = objective(model(xb), yb)
        penalty = l1 * l1_penalty(model) if l1 else 0.0
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss + penalty)
        optimizer.step()
        total += loss.item() * len(xb)
        if check is not None and step % CHECK_EVERY == CHECK_EVERY - 1 and (code := check()):
            return total / max(start + len(xb), 1), code
    return total / max(len(x), 1), 0


def train(
    spec: TrainSpec,
    data: PreparedData,
    callbacks: Callbacks,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    hyper, enc = spec.hyper, data.encoding
    rank, world = _rank_world()
    torch.manual_seed(hyper.seed)
    net = build_model(spec.model, enc)
    model: nn.Module = DistributedDataParallel(net) if world > 1 else net
    optimizer = make_optimizer(hyper, net)
    scheduler = make_scheduler(hyper, optimizer, hyper.epochs)
    objective = Objective(enc)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    sampler: DistributedSampler[Any] = DistributedSampler(
        TensorDataset(x), num_replicas=world, rank=rank, seed=hyper.seed
    )
    batch_size = max(1, hyper.batch_size // world)  # the global batch is hyper.batch_size

    epoch, history, elapsed = 0, [], 0.0
    best: dict[str, Any] = {"loss": float("inf"), "epoch": 0, "bad_epochs": 0, "model": None}
    if resume is not None:
        net.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        epoch, history = int(resume["epoch"]), list(resume["history"])
        best, elapsed = dict(resume["best"]), float(resume["elapsed"])
        callbacks.log(f"resuming after epoch {epoch}")
    started = time.monotonic() - elapsed

    def agreed_stop(epoch_end: bool = False) -> int:
        return _agree(stop_code(hyper, callbacks, started, best, epoch_end), world)

    code = 0
    while epoch < hyper.epochs and not code:
        t0 = time.monotonic()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        train_loss, code = run_epoch(
            model, objective, optimizer, x[order], y[order], batch_size, hyper.l1, agreed_stop
        )
        if code:
            break  # an unfinished epoch is not counted, checkpointed or reported
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        epoch += 1
        metrics = evaluate(net, objective, data.x_val, data.y_val)
        best = update_best(best, hyper, epoch, metrics["val_loss"], net)
        record = {"epoch": float(epoch), "train_loss": _mean(train_loss, world), **metrics}
        history.append({**record, "lr": lr, "seconds": time.monotonic() - t0})
        callbacks.progress(epoch, hyper.epochs, record)
        code = agreed_stop(True)
        if code or epoch % hyper.checkpoint_every == 0 or epoch == hyper.epochs:
            state = {
                "format": 1, "epoch": epoch, "model": net.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(), "best": best, "history": history,
                "elapsed": time.monotonic() - started,
                "spec": spec.model_dump(mode="json"), "encoding": enc.to_dict(),
            }  # fmt: skip
            callbacks.checkpoint(copy.deepcopy(state))  # the caller's own copy

    reason = STOP_REASONS[code]
    if reason != "completed":
        callbacks.log(f"stopped after epoch {epoch}: {reason}")
    if best["model"] is not None:  # early stopping keeps the best epoch's weights
        net.load_state_dict(best["model"])
    metrics = evaluate(net, objective, data.x_val, data.y_val) | baseline([data])
    if history:
        metrics["train_loss"] = history[-1]["train_loss"]
    inputs, outputs = io_names(enc)
    return TrainResult(
        model=net.eval(), metrics=metrics, history=history, epochs_run=epoch,
        stopped_early=reason != "completed", example_input=torch.from_numpy(data.x_val[:4]),
        input_names=inputs, output_names=outputs, encoding=enc, spec=spec, stop_reason=reason,
    )  # fmt: skip
