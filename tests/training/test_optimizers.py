"""Optimizers, schedules and the L1/L2 penalties, on iris."""

from __future__ import annotations

import math

import pytest
import torch

from modelplane.training.loop import NullCallbacks, TrainResult, train
from modelplane.training.metrics import Objective, evaluate
from modelplane.training.models import build_model
from modelplane.training.optim import make_optimizer, weights
from tests.training.helpers import iris

RATES = {
    "sgd": 0.1,
    "momentum": 0.05,
    "adagrad": 0.05,
    "rmsprop": 0.005,
    "adam": 0.01,
    "adamw": 0.01,
}


def fit(**hyper: object) -> TrainResult:
    spec, data = iris(**hyper)
    return train(spec, data, NullCallbacks())


def flat_weights(r: TrainResult) -> torch.Tensor:
    return torch.cat([w.detach().flatten() for w in weights(r.model)])


@pytest.mark.parametrize("optimizer", sorted(RATES))
def test_every_optimizer_lowers_the_loss(optimizer: str) -> None:
    spec, data = iris(epochs=10, optimizer=optimizer, learning_rate=RATES[optimizer])
    torch.manual_seed(spec.hyper.seed)
    untrained = build_model(spec.model, data.encoding)
    before = evaluate(untrained, Objective(data.encoding), data.x_val, data.y_val)["val_loss"]
    r = train(spec, data, NullCallbacks())
    assert r.metrics["val_loss"] < 0.6 * before
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.metrics["accuracy"] > 0.8


def test_l2_is_weight_decay_on_weights_only() -> None:
    spec, data = iris(optimizer="adamw", l2=0.05)
    opt = make_optimizer(spec.hyper, build_model(spec.model, data.encoding))
    assert isinstance(opt, torch.optim.AdamW)  # decoupled decay
    decays = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 0.05, 1: 0.0}  # biases are not decayed


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_l1_makes_weights_sparser(optimizer: str) -> None:
    rate = RATES[optimizer]
    plain = flat_weights(fit(epochs=30, optimizer=optimizer, learning_rate=rate))
    sparse = flat_weights(fit(epochs=30, optimizer=optimizer, learning_rate=rate, l1=0.01))
    near_zero = [(w.abs() < 0.01).float().mean().item() for w in (plain, sparse)]
    assert near_zero[1] > near_zero[0] + 0.25
    assert sparse.abs().sum() < 0.7 * plain.abs().sum()


# AdamW's decoupled decay shrinks by lr·λ per step, so the same effect takes a larger λ
@pytest.mark.parametrize(("optimizer", "l2"), [("sgd", 0.1), ("adam", 0.1), ("adamw", 2.0)])
def test_l2_lowers_the_weight_norm(optimizer: str, l2: float) -> None:
    rate = RATES[optimizer]
    plain = fit(epochs=30, optimizer=optimizer, learning_rate=rate)
    decayed = fit(epochs=30, optimizer=optimizer, learning_rate=rate, l2=l2)
    assert flat_weights(decayed).norm() < 0.8 * flat_weights(plain).norm()
    assert decayed.metrics["accuracy"] > 0.8


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [1.0] * 6),
        ("step", [1, 1, 0.5, 0.5, 0.25, 0.25]),
        ("cosine", [0.5 * (1 + math.cos(math.pi * e / 6)) for e in range(6)]),
        ("linear_warmup", [1 / 3, 2 / 3, 1, 1, 1, 1]),
    ],
)
def test_schedules(schedule: str, expected: list[float]) -> None:
    r = fit(
        epochs=6, schedule=schedule, step_size=2, gamma=0.5, warmup_epochs=2, learning_rate=0.01
    )
    assert [h["lr"] for h in r.history] == pytest.approx([0.01 * f for f in expected])
