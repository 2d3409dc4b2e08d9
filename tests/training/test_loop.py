"""The loop's contract with the job runner: progress, checkpoints, resume, stopping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelplane.training.export import load_checkpoint, save_checkpoint
from modelplane.training.loop import NullCallbacks, train
from tests.training.helpers import Recorder, iris


def test_progress_and_checkpoints_every_epoch() -> None:
    spec, data = iris(epochs=5, checkpoint_every=2)
    rec = Recorder()
    r = train(spec, data, rec)
    assert [(e, t) for e, t, _ in rec.epochs] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert {"train_loss", "val_loss", "accuracy", "f1"} <= set(rec.epochs[-1][2])
    assert [c["epoch"] for c in rec.checkpoints] == [2, 4, 5]  # and always the last one
    assert r.epochs_run == 5 and not r.stopped_early and r.stop_reason == "completed"
    assert len(r.history) == 5 and r.metrics["accuracy"] == rec.epochs[-1][2]["accuracy"]


def test_same_seed_same_model_other_seed_other_model() -> None:
    runs = [train(*iris(epochs=3, seed=s), NullCallbacks()) for s in (7, 7, 8)]
    a, b, c = (torch.cat([p.flatten() for p in r.model.parameters()]) for r in runs)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resume_from_a_checkpoint_equals_a_straight_run(tmp_path: Path) -> None:
    hyper = {"epochs": 6, "schedule": "step", "step_size": 2, "gamma": 0.5, "learning_rate": 0.02}
    spec, data = iris(**hyper)
    spec.model.dropout = 0.2  # dropout draws from the generator state the checkpoint keeps
    straight = train(spec, data, NullCallbacks())

    first = Recorder(stop_after=3)  # the job is interrupted after epoch 3
    train(spec, data, first)
    save_checkpoint(first.checkpoints[-1], tmp_path / "ckpt.pt")
    state = load_checkpoint(tmp_path / "ckpt.pt")  # weights_only=True: plain data only
    assert state["epoch"] == 3 and len(state["history"]) == 3
    resumed = train(spec, data, Recorder(), resume=state)

    assert resumed.epochs_run == 6
    assert resumed.metrics == pytest.approx(straight.metrics, abs=1e-6)
    assert [h["val_loss"] for h in resumed.history] == pytest.approx(
        [h["val_loss"] for h in straight.history], abs=1e-6
    )
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)


def test_checkpoints_are_the_callers_own_copies() -> None:
    spec, data = iris(epochs=3)
    rec = Recorder()
    train(spec, data, rec)
    first, last = rec.checkpoints[0]["model"], rec.checkpoints[-1]["model"]
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_early_stopping_stops_before_the_last_epoch_and_keeps_the_best() -> None:
    spec, data = iris(epochs=300, learning_rate=0.05, early_stopping_patience=3)
    r = train(spec, data, NullCallbacks())
    assert r.stopped_early and r.stop_reason == "early_stopping"
    assert r.epochs_run < 300
    best = min(h["val_loss"] for h in r.history)
    assert r.metrics["val_loss"] == pytest.approx(best)
    losses = [h["val_loss"] for h in r.history]
    assert min(losses[-3:]) >= best and losses.index(best) == len(losses) - 4


def test_cancel_between_epochs() -> None:
    spec, data = iris(epochs=50)
    rec = Recorder(stop_after=2)
    r = train(spec, data, rec)
    assert r.stop_reason == "cancelled" and r.epochs_run == 2
    assert rec.checkpoints[-1]["epoch"] == 2  # the last finished epoch is saved
    assert any("cancelled" in line for line in rec.lines)


def test_cancel_inside_an_epoch() -> None:
    spec, data = iris(epochs=5, batch_size=1)  # 120 steps an epoch; checked every 32
    rec = Recorder(stop_after=0)
    r = train(spec, data, rec)
    assert r.stop_reason == "cancelled" and r.epochs_run == 0 and rec.epochs == []


def test_max_runtime() -> None:
    spec, data = iris(epochs=10_000, max_runtime_seconds=0.3)
    r = train(spec, data, NullCallbacks())
    assert r.stop_reason == "max_runtime" and 0 < r.epochs_run < 10_000
