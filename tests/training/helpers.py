"""Data sets (scikit-learn's bundled ones and small generated tasks) and recording callbacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits, load_iris, load_wine

from modelplane.training import PreparedData, TrainSpec, prepare


class Recorder:
    """Callbacks that remember everything; ``stop_after`` epochs makes should_stop true."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.epochs: list[tuple[int, int, dict[str, float]]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.stop_after = stop_after

    def progress(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, total, metrics))

    def checkpoint(self, state: dict[str, Any]) -> None:
        self.checkpoints.append(state)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.epochs) >= self.stop_after

    def log(self, line: str) -> None:
        self.lines.append(line)


def spec_of(**parts: Any) -> TrainSpec:
    return TrainSpec.model_validate(parts)


def iris_frame() -> pd.DataFrame:
    frame: pd.DataFrame = load_iris(as_frame=True).frame
    return frame


def wine_frame() -> pd.DataFrame:
    frame: pd.DataFrame = load_wine(as_frame=True).frame
    return frame


def iris(**hyper: Any) -> tuple[TrainSpec, PreparedData]:
    """A small MLP on iris; ``hyper`` overrides the defaults."""
    h = {"epochs": 20, "learning_rate": 0.01, "batch_size": 16, **hyper}
    spec = spec_of(model={"hidden": [16]}, hyper=h, data={"target": "target"})
    return spec, prepare(spec, iris_frame())


def digits() -> dict[str, np.ndarray]:
    d = load_digits()
    return {"image": d.images.astype(np.float32), "label": d.target}


def sequences(n: int = 800, steps: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Is the sum of a noisy sequence positive? The answer needs the whole sequence."""
    x = np.random.default_rng(seed).normal(size=(n, steps, 2)).astype(np.float32)
    return {"seq": x, "positive": (x[:, :, 0].sum(1) > 0).astype(np.int64)}


POSITIVE = ["great", "wonderful", "excellent", "lovely", "fantastic", "good", "superb"]
NEGATIVE = ["terrible", "awful", "bad", "horrible", "poor", "boring", "dull"]
NOUNS = ["movie", "food", "service", "book", "show", "hotel", "album", "game"]
TEMPLATES = [
    "the {n} was {w}",
    "what a {w} {n}",
    "i think this {n} is really {w}",
    "honestly the {n} is {w} and i would say so again",
    "{w}",
]


def sentiment(n: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """Templated reviews; a quarter are negated ("not good" is negative)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        good, negated = bool(rng.random() < 0.5), bool(rng.random() < 0.25)
        word = str(rng.choice(POSITIVE if good else NEGATIVE))
        text = str(rng.choice(TEMPLATES)).format(n=rng.choice(NOUNS), w=word)
        if negated:
            text = text.replace(word, f"not {word}")
        texts.append(text)
        labels.append("positive" if good != negated else "negative")
    return {"text": np.array(texts, dtype=object), "label": np.array(labels)}
