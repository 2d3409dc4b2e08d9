"""Every model family learns: its validation metric beats the no-input baseline clearly."""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from modelplane.training import prepare
from modelplane.training.loop import NullCallbacks, TrainResult, train
from tests.training.helpers import digits, iris_frame, sentiment, sequences, spec_of, wine_frame


def fit(table: Any, **parts: Any) -> TrainResult:
    spec = spec_of(**parts)
    return train(spec, prepare(spec, table), NullCallbacks())


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_mlp_classifies_tabular_data(name: str) -> None:
    frames = {
        "iris": iris_frame,
        "wine": wine_frame,
        "breast_cancer": lambda: load_breast_cancer(as_frame=True).frame,
    }
    r = fit(
        frames[name](),
        model={"hidden": [32]},
        hyper={"epochs": 25, "learning_rate": 0.01, "batch_size": 16},
        data={"target": "target"},
    )
    assert r.metrics["accuracy"] >= max(0.85, r.metrics["baseline_accuracy"] + 0.3)
    assert r.metrics["f1"] >= 0.8


def test_mlp_regression_in_target_units() -> None:
    r = fit(
        load_diabetes(as_frame=True, scaled=False).frame,
        model={"hidden": [32]},
        hyper={"epochs": 40, "learning_rate": 0.003},
        data={"target": "target"},
    )
    assert r.encoding.task == "regression"
    assert r.metrics["mse"] < 0.75 * r.metrics["baseline_mse"]  # R² > 0.25 on diabetes
    assert r.metrics["baseline_mse"] > 1000  # errors are reported in the target's units


def test_cnn_on_8x8_digits() -> None:
    r = fit(
        digits(),
        model={"architecture": "cnn", "channels": [8, 16], "hidden": [32]},
        hyper={"epochs": 6, "learning_rate": 0.005},
        data={"target": "label", "image_field": "image"},
    )
    assert r.example_input.shape[1:] == (1, 8, 8)
    assert r.metrics["accuracy"] >= 0.9 > 0.15 > r.metrics["baseline_accuracy"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_learns_a_sequence_task(cell: str) -> None:
    r = fit(
        sequences(),
        model={"architecture": "rnn", "cell": cell, "hidden": [16]},
        hyper={"epochs": 12, "learning_rate": 0.01},
        data={"target": "positive", "sequence_field": "seq"},
    )
    assert r.metrics["accuracy"] >= r.metrics["baseline_accuracy"] + 0.3


def test_transformer_learns_templated_sentiment() -> None:
    r = fit(
        sentiment(),
        model={
            "architecture": "transformer",
            "d_model": 32,
            "heads": 4,
            "hidden": [64],
            "max_len": 16,
        },
        hyper={"epochs": 15, "learning_rate": 0.005},
        data={"target": "label", "text_field": "text"},
    )
    assert r.encoding.vocab[:2] == ["<pad>", "<unk>"] and "not" in r.encoding.vocab
    assert r.metrics["accuracy"] >= 0.85 > 0.6 > r.metrics["baseline_accuracy"]


def test_autoencoder_reconstructs_digits() -> None:
    r = fit(
        digits(),
        model={"architecture": "autoencoder", "hidden": [48], "latent": 12},
        hyper={"epochs": 25, "learning_rate": 0.003},
        data={"image_field": "image"},
    )
    assert r.encoding.task == "reconstruction" and r.output_names == ["reconstruction"]
    assert r.metrics["mse"] < 0.5 * r.metrics["baseline_mse"]
