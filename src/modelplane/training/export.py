"""Export a trained model to ONNX (checked against torch), and save/load checkpoints.

The ONNX model takes raw inputs (standardisation is inside it) with a dynamic
batch axis (and a dynamic time axis for rnn):

- ``input`` float32 [batch, *encoding.input_shape] — feature columns in
  ``encoding.feature_names`` order, NaN allowed (taken as the training mean);
  images [batch, C, H, W]; sequences [batch, T, F].
- ``input_ids`` int64 [batch, max_len] for text: ``data.tokenize(texts,
  vocab, max_len)`` — lower-cased ``\\w+`` tokens, id = index in ``vocab``
  (0 ``<pad>``, 1 ``<unk>``), truncated and zero-padded to ``max_len``.

It outputs ``probabilities`` [batch, n_classes] (softmax, or per-class sigmoid
when trained with bce; class names in ``classes``), ``prediction`` [batch, 1]
in the target's units, or ``reconstruction`` [batch, n_features].
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from modelplane.training.loop import TrainResult
from modelplane.training.text import TOKEN


class ExportError(RuntimeError):
    """The ONNX model disagrees with torch, or could not be written."""


class Probabilities(nn.Module):
    def __init__(self, model: nn.Module, sigmoid: bool) -> None:
        super().__init__()
        self.model, self.sigmoid = model, sigmoid

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        return torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, dim=-1)


def inference_model(result: TrainResult) -> nn.Module:
    """The module that is exported: the trained model, plus softmax/sigmoid for classes."""
    enc = result.encoding
    if enc.task == "classification":
        return Probabilities(result.model, sigmoid=enc.loss == "bce").eval()
    return result.model.eval()


def signature(result: TrainResult) -> dict[str, Any]:
    """Inputs/outputs (name, dtype, shape with -1 for dynamic axes) and what preprocessing needs."""
    enc, arch = result.encoding, result.spec.model.architecture
    shape = [-1, *enc.input_shape]
    if arch == "rnn":
        shape[1] = -1
    dtype = "int64" if enc.kind == "text" else "float32"
    sig: dict[str, Any] = {
        "inputs": [{"name": result.input_names[0], "dtype": dtype, "shape": shape}],
        "outputs": [
            {"name": result.output_names[0], "dtype": "float32", "shape": [-1, enc.n_outputs]}
        ],
        "task": enc.task,
        "architecture": arch,
        "classes": enc.classes,
        "feature_names": enc.feature_names,
        "metrics": result.metrics,
    }
    if enc.kind == "text":
        sig["tokenizer"] = {
            "vocab": enc.vocab, "max_len": enc.input_shape[0], "lowercase": True,
            "pattern": TOKEN.pattern, "pad_id": 0, "unk_id": 1,
        }  # fmt: skip
    return sig


def export_onnx(
    result: TrainResult, path: Path, *, opset: int = 17, atol: float = 1e-4
) -> dict[str, Any]:
    """Write ``path`` and return its signature; raises ExportError if onnxruntime disagrees."""
    import onnxruntime as ort

    model, sig = inference_model(result), signature(result)
    inp, out = result.input_names[0], result.output_names[0]
    axes = {inp: {0: "batch"}, out: {0: "batch"}}
    if result.spec.model.architecture == "rnn":
        axes[inp][1] = "time"
    example = result.example_input
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in shapes
        torch.onnx.export(
            model, (example,), str(path), input_names=[inp], output_names=[out],
            dynamic_axes=axes, opset_version=opset, dynamo=False,
        )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (example, torch.cat([example, example[:1]])):  # a second batch size
        with torch.no_grad():
            expected = model(batch).numpy()
        got = session.run([out], {inp: batch.numpy()})[0]
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if not worst <= atol:
        raise ExportError(f"ONNX output differs from torch by {worst:.3g} (atol {atol})")
    sig["max_abs_diff"] = worst
    return sig


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(source: Path | bytes) -> dict[str, Any]:
    """A checkpoint saved by ``save_checkpoint`` (or callbacks); only plain data is unpickled."""
    f = io.BytesIO(source) if isinstance(source, bytes) else source
    state: dict[str, Any] = torch.load(f, map_location="cpu", weights_only=True)
    return state
