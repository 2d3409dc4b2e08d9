"""The training objective and validation metrics.

Regression and reconstruction losses are taken in standardised units (the
model outputs raw-scale values; the objective maps both sides back through the
training mean and std), so a target measured in thousands trains like one in
units. Reported ``mse``/``mae`` are in the target's own units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from modelplane.training.data import Encoding, PreparedData


class Objective:
    """Data loss for one batch: cross_entropy/bce on logits, mse/mae on standardised values."""

    def __init__(self, enc: Encoding) -> None:
        self.enc = enc
        self.mean = torch.tensor(enc.y_mean, dtype=torch.float32).reshape(1, -1)
        self.std = torch.tensor(enc.y_std, dtype=torch.float32).reshape(1, -1)

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        loss = self.enc.loss
        if loss == "cross_entropy":
            return functional.cross_entropy(out, y)
        if loss == "bce":
            target = functional.one_hot(y, len(self.enc.classes)).to(out.dtype)
            return functional.binary_cross_entropy_with_logits(out, target)
        pred, target = (out - self.mean) / self.std, (y - self.mean) / self.std
        if loss == "mae":
            return functional.l1_loss(pred, target)
        return functional.mse_loss(pred, target)


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> Tensor:
    """Model outputs (logits or raw-scale values) for ``x`` in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        outs = [
            model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
        ]
    return torch.cat(outs)


def f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the classes that occur in either array (as scikit-learn's macro F1)."""
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp, fn = np.sum((y_pred == c) & (y_true != c)), np.sum((y_pred != c) & (y_true == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def evaluate(
    model: nn.Module, objective: Objective, x: np.ndarray, y: np.ndarray
) -> dict[str, float]:
    """Validation metrics: val_loss plus accuracy and f1, or mse and mae (target units)."""
    out = predict(model, x)
    metrics = {"val_loss": float(objective(out, torch.from_numpy(y)))}
    if objective.enc.task == "classification":
        pred = out.argmax(1).numpy()
        metrics["accuracy"] = float(np.mean(pred == y))
        metrics["f1"] = f1_macro(y, pred)
    else:
        err = out.numpy() - y
        metrics["mse"] = float(np.mean(err**2))
        metrics["mae"] = float(np.mean(np.abs(err)))
    return metrics


def baseline(parts: Sequence[PreparedData]) -> dict[str, float]:
    """What a model with no input scores: the majority class, or the training mean.

    Computed from per-part counts and sums, so federated participants share no rows.
    """
    n_val = sum(len(p.y_val) for p in parts)
    if parts[0].encoding.task == "classification":
        n_classes = len(parts[0].encoding.classes)
        counts = np.sum([np.bincount(p.y_train, minlength=n_classes) for p in parts], axis=0)
        majority = int(np.argmax(counts))
        hits = sum(int(np.sum(p.y_val == majority)) for p in parts)
        return {"baseline_accuracy": hits / n_val}
    mean = sum(p.y_train.sum(axis=0) for p in parts) / sum(len(p.y_train) for p in parts)
    sq = sum(float(np.sum((p.y_val - mean) ** 2)) for p in parts)
    ab = sum(float(np.sum(np.abs(p.y_val - mean))) for p in parts)
    width = parts[0].y_val.shape[1]
    return {"baseline_mse": sq / (n_val * width), "baseline_mae": ab / (n_val * width)}
