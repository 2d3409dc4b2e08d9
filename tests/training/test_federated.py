"""FedAvg: iid participants match centralised training; label-skewed ones still learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from modelplane.training import prepare, prepare_federated
from modelplane.training.federated import fedavg, federated_train
from modelplane.training.loop import NullCallbacks, train
from modelplane.training.metrics import Objective, evaluate
from modelplane.training.models import build_model
from tests.training.helpers import Recorder, iris_frame, spec_of, wine_frame

FRAMES = {"iris": iris_frame, "wine": wine_frame}
HYPER = {"epochs": 15, "learning_rate": 0.01, "batch_size": 16}


def iid(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    shuffled = frame.sample(frac=1.0, random_state=0)
    return [shuffled.iloc[i::n] for i in range(n)]


def test_fedavg_weights_by_sample_count() -> None:
    states = [
        {"w": torch.zeros(2), "steps": torch.tensor(1)},
        {"w": torch.ones(2), "steps": torch.tensor(5)},
    ]
    avg = fedavg(states, [1, 3])
    torch.testing.assert_close(avg["w"], torch.full((2,), 0.75))
    assert avg["steps"].item() == 1  # integers are not averaged


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_iid_participants_match_centralised_training(name: str) -> None:
    spec = spec_of(model={"hidden": [16]}, hyper=HYPER, data={"target": "target"})
    central = train(spec, prepare(spec, FRAMES[name]()), NullCallbacks())
    parts = prepare_federated(spec, iid(FRAMES[name](), 3))
    rec = Recorder()
    fed = federated_train(spec, parts, rounds=15, local_epochs=1, callbacks=rec)
    assert fed.epochs_run == 15 and len(rec.epochs) == 15 and len(rec.checkpoints) == 15
    assert fed.metrics["accuracy"] >= central.metrics["accuracy"] - 0.1
    assert fed.metrics["accuracy"] >= fed.metrics["baseline_accuracy"] + 0.4
    assert fed.metrics["val_loss"] < central.metrics["val_loss"] + 0.15


def test_label_skewed_participants_still_improve_on_the_initial_model() -> None:
    frame = iris_frame()
    spec = spec_of(model={"hidden": [16]}, hyper=HYPER, data={"target": "target"})
    parts = prepare_federated(spec, [frame[frame.target == c] for c in (0, 1, 2)])
    assert [np.unique(p.y_train).tolist() for p in parts] == [[0], [1], [2]]
    torch.manual_seed(spec.hyper.seed)
    initial = build_model(spec.model, parts[0].encoding)
    objective = Objective(parts[0].encoding)
    before = np.mean([evaluate(initial, objective, p.x_val, p.y_val)["accuracy"] for p in parts])
    fed = federated_train(spec, parts, rounds=20, local_epochs=1, callbacks=NullCallbacks())
    assert fed.metrics["accuracy"] >= before + 0.2
    assert fed.metrics["accuracy"] > fed.metrics["baseline_accuracy"] + 0.2


def test_resume_and_cancel() -> None:
    spec = spec_of(model={"hidden": [16]}, hyper=HYPER, data={"target": "target"})
    parts = prepare_federated(spec, iid(iris_frame(), 2))
    straight = federated_train(spec, parts, rounds=4, local_epochs=2, callbacks=NullCallbacks())
    first = Recorder(stop_after=2)
    cut = federated_train(spec, parts, rounds=4, local_epochs=2, callbacks=first)
    assert cut.stop_reason == "cancelled" and cut.epochs_run == 2
    state = first.checkpoints[-1]
    assert state["kind"] == "federated" and state["round"] == 2
    resumed = federated_train(spec, parts, 4, 2, NullCallbacks(), resume=state)
    assert resumed.metrics == pytest.approx(straight.metrics, abs=1e-6)


def test_participants_need_one_encoding() -> None:
    spec = spec_of(data={"target": "target"})
    a, b = (prepare(spec, f) for f in iid(iris_frame(), 2))
    with pytest.raises(ValueError, match="prepare_federated"):
        federated_train(spec, [a, b], 1, 1, NullCallbacks())
