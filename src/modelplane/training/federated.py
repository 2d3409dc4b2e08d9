"""Federated averaging (FedAvg, McMahan et al. 2017) over participants' datasets.

Every round, each participant trains a copy of the global model on its own
data for ``local_epochs`` (a fresh optimizer each round, the round's learning
rate from the schedule), and the coordinator replaces the global weights with
the average of the participants' weights, weighted by their training-sample
counts: w = Σ nᵢ·wᵢ / Σ nᵢ. Rows never leave their participant: the shared
encoding (``data.prepare_federated``) and the baseline are built from counts
and sums, and each round's metrics are the participants' own validation
metrics averaged by validation size (exact for loss, accuracy, mse and mae;
an approximation for macro f1). Early stopping does not apply; cancel and
``max_runtime_seconds`` are checked after every participant.

Checkpoints hold ``format, kind="federated", round (completed), model, rng,
history, elapsed, spec, encoding``; pass one as ``resume`` to continue.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from modelplane.training.data import PreparedData
from modelplane.training.loop import Callbacks, TrainResult, io_names, run_epoch
from modelplane.training.metrics import Objective, baseline, evaluate
from modelplane.training.models import build_model
from modelplane.training.optim import lr_factor, make_optimizer
from modelplane.training.spec import TrainSpec


def fedavg(states: Sequence[dict[str, Tensor]], counts: Sequence[int]) -> dict[str, Tensor]:
    """Σ nᵢ·wᵢ / Σ nᵢ for floating-point entries; other entries are taken from the first."""
    total = float(sum(counts))
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            weighted = (s[key] * (n / total) for s, n in zip(states, counts, strict=True))
            out[key] = sum(weighted, torch.zeros_like(first))
        else:
            out[key] = first.clone()
    return out


def local_update(
    model: nn.Module, data: PreparedData, spec: TrainSpec, lr: float, epochs: int, seed: int
) -> float:
    """Train ``model`` in place on one participant's data; its mean loss over the last epoch."""
    hyper = spec.hyper
    optimizer = make_optimizer(hyper, model)
    for group in optimizer.param_groups:
        group["lr"] = lr
    objective = Objective(data.encoding)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(seed)
    loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        loss, _ = run_epoch(
            model, objective, optimizer, x[order], y[order], hyper.batch_size, hyper.l1
        )
    return loss


def _validate(model: nn.Module, participants: Sequence[PreparedData]) -> dict[str, float]:
    objective = Objective(participants[0].encoding)
    sizes = [len(p.y_val) for p in participants]
    each = [evaluate(model, objective, p.x_val, p.y_val) for p in participants]
    return {k: float(np.average([m[k] for m in each], weights=sizes)) for k in each[0]}


def federated_train(
    spec: TrainSpec,
    participants: Sequence[PreparedData],
    rounds: int,
    local_epochs: int,
    callbacks: Callbacks,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    if not participants:
        raise ValueError("federated training needs at least one participant")
    enc = participants[0].encoding
    if any(p.encoding != enc for p in participants):
        raise ValueError("participants must share one encoding: use data.prepare_federated")
    hyper = spec.hyper
    torch.manual_seed(hyper.seed)
    model = build_model(spec.model, enc)
    done, history, elapsed = 0, [], 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        torch.set_rng_state(resume["rng"])
        done, history, elapsed = int(resume["round"]), list(resume["history"]), resume["elapsed"]
        callbacks.log(f"resuming after round {done}")
    started = time.monotonic() - float(elapsed)
    factor, counts = lr_factor(hyper, rounds), [p.n_train for p in participants]
    reason = "completed"

    def stop_reason() -> str | None:
        if callbacks.should_stop():
            return "cancelled"
        limit = hyper.max_runtime_seconds
        return "max_runtime" if limit and time.monotonic() - started > limit else None

    while done < rounds and reason == "completed":
        t0, states, losses = time.monotonic(), [], []
        lr = hyper.learning_rate * factor(done)
        for i, part in enumerate(participants):
            local = copy.deepcopy(model)
            seed = int(np.random.SeedSequence([hyper.seed, done, i]).generate_state(1)[0])
            losses.append(local_update(local, part, spec, lr, local_epochs, seed))
            states.append(local.state_dict())
            if (why := stop_reason()) is not None:
                reason = why
                break
        if reason != "completed":
            break  # an unfinished round is not averaged
        model.load_state_dict(fedavg(states, counts))
        done += 1
        record = {"round": float(done), "train_loss": float(np.average(losses, weights=counts))}
        record |= _validate(model, participants)
        history.append({**record, "lr": lr, "seconds": time.monotonic() - t0})
        callbacks.progress(done, rounds, record)
        reason = stop_reason() or reason
        callbacks.checkpoint(copy.deepcopy({
            "format": 1, "kind": "federated", "round": done, "model": model.state_dict(),
            "rng": torch.get_rng_state(), "history": history,
            "elapsed": time.monotonic() - started, "spec": spec.model_dump(mode="json"),
            "encoding": enc.to_dict(),
        }))  # fmt: skip
    if reason != "completed":
        callbacks.log(f"stopped after round {done}: {reason}")
    metrics = _validate(model, participants) | baseline(participants)
    inputs, outputs = io_names(enc)
    example = torch.from_numpy(participants[0].x_val[:4])
    return TrainResult(
        model=model.eval(), metrics=metrics, history=history, epochs_run=done,
        stopped_early=reason != "completed", example_input=example,
        input_names=inputs, output_names=outputs, encoding=enc, spec=spec, stop_reason=reason,
        extra={"rounds": done, "local_epochs": local_epochs, "participants": len(participants)},
    )  # fmt: skip
