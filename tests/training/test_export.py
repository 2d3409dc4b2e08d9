"""ONNX export: raw inputs in, the same outputs as torch, with a dynamic batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from modelplane.training import prepare, tokenize
from modelplane.training.export import export_onnx, inference_model
from modelplane.training.loop import NullCallbacks, TrainResult, train
from tests.training.helpers import digits, iris_frame, sentiment, sequences, spec_of

# name: (model, data, table)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], Any]] = {
    "mlp": ({}, {"target": "target"}, iris_frame),
    "regression": ({}, {"target": "petal width (cm)", "task": "regression"}, iris_frame),
    "cnn": (
        {"architecture": "cnn", "channels": [4]},
        {"target": "label", "image_field": "image"},
        digits,
    ),
    "gru": (
        {"architecture": "rnn", "cell": "gru", "layers": 2},
        {"target": "positive", "sequence_field": "seq"},
        sequences,
    ),
    "lstm": ({"architecture": "rnn"}, {"target": "positive", "sequence_field": "seq"}, sequences),
    "transformer": (
        {"architecture": "transformer", "max_len": 12, "layers": 2},
        {"target": "label", "text_field": "text"},
        sentiment,
    ),
    "autoencoder": ({"architecture": "autoencoder"}, {"image_field": "image"}, digits),
}


def trained(name: str) -> TrainResult:
    model, data, table = CASES[name]
    spec = spec_of(model=model, data=data, hyper={"epochs": 2, "learning_rate": 0.01})
    return train(spec, prepare(spec, table()), NullCallbacks())


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_matches_torch(name: str, tmp_path: Path) -> None:
    r = trained(name)
    sig = export_onnx(r, tmp_path / "model.onnx")
    assert sig["max_abs_diff"] <= 1e-4
    assert sig["inputs"][0]["name"] == r.input_names[0] and sig["inputs"][0]["shape"][0] == -1
    assert sig["outputs"][0]["shape"] == [-1, r.encoding.n_outputs]
    batch = r.example_input.repeat(3, *[1] * (r.example_input.ndim - 1))[:11]  # another size
    with torch.no_grad():
        expected = inference_model(r)(batch).numpy()
    got = session(tmp_path / "model.onnx").run(None, {r.input_names[0]: batch.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_tabular_model_takes_raw_features_with_missing_values(tmp_path: Path) -> None:
    r = trained("mlp")
    sig = export_onnx(r, tmp_path / "iris.onnx")
    rows = iris_frame()[sig["feature_names"]].to_numpy(np.float32)[[0, 60, 120]]
    probs = session(tmp_path / "iris.onnx").run(None, {"input": rows})[0]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert sig["classes"] == ["0", "1", "2"] and sig["task"] == "classification"
    rows[0, 1] = np.nan  # a missing value is taken as the training mean
    probs = session(tmp_path / "iris.onnx").run(None, {"input": rows})[0]
    assert np.isfinite(probs).all()


def test_text_model_runs_from_its_signature(tmp_path: Path) -> None:
    r = trained("transformer")
    sig = export_onnx(r, tmp_path / "text.onnx")
    tok = sig["tokenizer"]
    assert tok["vocab"][:2] == ["<pad>", "<unk>"] and tok["max_len"] == 12
    texts = ["what a wonderful movie", "", "the food was not good at all today and more words"]
    ids = tokenize(texts, tok["vocab"], tok["max_len"])
    probs = session(tmp_path / "text.onnx").run(None, {"input_ids": ids})[0]
    with torch.no_grad():
        expected = inference_model(r)(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert np.isfinite(probs).all()  # an empty text is all padding


def test_rnn_accepts_other_sequence_lengths(tmp_path: Path) -> None:
    r = trained("lstm")
    sig = export_onnx(r, tmp_path / "rnn.onnx")
    assert sig["inputs"][0]["shape"] == [-1, -1, 2]
    x = np.random.default_rng(1).normal(size=(5, 17, 2)).astype(np.float32)
    got = session(tmp_path / "rnn.onnx").run(None, {"input": x})[0]
    with torch.no_grad():
        expected = inference_model(r)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
