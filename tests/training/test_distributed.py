"""Data-parallel training with gloo on CPU: 2 workers learn what 1 worker learns."""

from __future__ import annotations

import threading
import time

import pytest

from modelplane.training.distributed import Rendezvous, free_port, run_ddp, run_training
from modelplane.training.loop import NullCallbacks, train
from tests.training.helpers import Recorder, iris

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(name="ddp")]  # one forkserver for all


def test_two_workers_match_one_with_the_same_global_batch() -> None:
    spec, data = iris(epochs=8, batch_size=32, checkpoint_every=4)
    one = train(spec, data, NullCallbacks())
    rec = Recorder()
    t0 = time.monotonic()
    two = run_ddp(spec, data, rec, workers=2)
    seconds = time.monotonic() - t0
    print(
        f"val_loss: 1 worker {one.metrics['val_loss']:.5f}, 2 workers {two.metrics['val_loss']:.5f}"
    )
    print(f"2 workers took {seconds:.1f} s")
    # rank r takes every 2nd sample of the same seeded permutation, 16 a step: the union of
    # both ranks' batches is the 1-worker batch, and DDP averages the gradients
    assert two.metrics["val_loss"] == pytest.approx(one.metrics["val_loss"], rel=1e-3, abs=1e-4)
    assert two.metrics["accuracy"] == pytest.approx(one.metrics["accuracy"], abs=0.04)
    assert [h["train_loss"] for h in two.history] == pytest.approx(
        [h["train_loss"] for h in one.history], rel=1e-3
    )
    assert [e for e, _, _ in rec.epochs] == list(range(1, 9))  # rank 0 reported, once
    assert [c["epoch"] for c in rec.checkpoints] == [4, 8]
    assert rec.checkpoints[-1]["model"].keys() == one.model.state_dict().keys()  # unwrapped


def test_two_nodes_rendezvous_like_torchrun_nnodes_2() -> None:
    spec, data = iris(epochs=4, batch_size=32)
    one = train(spec, data, NullCallbacks())
    port, recorders, results = free_port(), [Recorder(), Recorder()], {}

    def node(rank: int) -> None:  # what each machine would run
        rdv = Rendezvous(master_addr="127.0.0.1", master_port=port, nnodes=2, node_rank=rank)
        results[rank] = run_ddp(spec, data, recorders[rank], workers=1, rendezvous=rdv)

    threads = [threading.Thread(target=node, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for r in results.values():
        assert r.metrics["val_loss"] == pytest.approx(one.metrics["val_loss"], rel=1e-3)
    assert len(results) == 2
    assert len(recorders[0].epochs) == 4 and recorders[1].epochs == []  # global rank 0 reports


def test_cancel_reaches_every_rank() -> None:
    spec, data = iris(epochs=10_000, batch_size=32)
    rec = Recorder(stop_after=2)
    r = run_ddp(spec, data, rec, workers=2, timeout_s=60)
    assert r.stop_reason == "cancelled" and 2 <= r.epochs_run < 10_000


def test_a_failing_worker_fails_the_run_without_hanging() -> None:
    spec, data = iris(epochs=2)
    bad = {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 0}  # cannot be loaded
    spec = spec.model_copy(update={"workers": 2})
    t0 = time.monotonic()
    with pytest.raises(Exception, match=r"state_dict|Missing"):
        run_training(spec, data, NullCallbacks(), resume=bad)
    assert time.monotonic() - t0 < 60


def test_a_failing_callback_ends_the_workers() -> None:
    class Broken(Recorder):
        def progress(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
            raise RuntimeError("database is down")

    spec, data = iris(epochs=10_000)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="database is down"):
        run_ddp(spec, data, Broken(), workers=2)
    assert time.monotonic() - t0 < 60
