"""From a table (a pandas DataFrame or a dict of numpy arrays) to model-ready arrays.

``prepare`` picks the input the architecture reads (numeric feature columns, an
image array, a sequence array or a text column), encodes the target (class
indices, or floats), splits train/validation by the seed (stratified for
classes) and fits an ``Encoding`` on the training rows only: class names,
standardisation statistics, the text vocabulary. The arrays stay *raw*: the
model standardises its own input (see ``models.Standardize``), so an exported
ONNX model takes raw features too. ``prepare_federated`` fits one shared
encoding from per-participant statistics (counts, sums, label sets, token
counts) without pooling any rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from modelplane.training.spec import INPUT_FIELD, Loss, Task, TrainSpec, check_loss
from modelplane.training.text import build_vocab, count_words, tokenize

InputKind = Literal["tabular", "image", "sequence", "text"]
_NOT_NUMERIC = ("object", "str", "category", "date", "time", "binary", "bytes", "list", "struct")


class FrameLike(Protocol):
    """What is read from a pandas DataFrame (pandas itself is not imported)."""

    @property
    def columns(self) -> Iterable[Any]: ...

    def __getitem__(self, key: Any, /) -> Any: ...


Table = Mapping[str, Any] | FrameLike


@dataclass
class Encoding:
    """Everything that maps raw rows to model inputs and outputs back; plain data only."""

    kind: InputKind
    task: Task
    loss: Loss
    feature_names: list[str]
    input_shape: list[int]  # one sample, e.g. [n_features], [C, H, W], [T, F], [max_len]
    classes: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)  # per feature (tabular, sequence), channel
    std: list[float] = field(default_factory=list)
    y_mean: list[float] = field(default_factory=list)  # regression target; reconstruction = x
    y_std: list[float] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)  # text: id -> token; 0 pad, 1 unknown

    @property
    def n_outputs(self) -> int:
        if self.task == "classification":
            return len(self.classes)
        return len(self.y_mean)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Encoding:
        return cls(**d)


@dataclass
class PreparedData:
    """Train/validation arrays of one dataset (one participant, in federated training)."""

    x_train: np.ndarray  # float32 (tabular/image/sequence, raw) or int64 token ids (text)
    y_train: np.ndarray  # int64 class indices, or float32 [N, k] targets
    x_val: np.ndarray
    y_val: np.ndarray
    encoding: Encoding

    @property
    def n_train(self) -> int:
        return len(self.x_train)


def to_columns(table: Table) -> dict[str, np.ndarray]:
    if isinstance(table, Mapping):
        return {str(k): np.asarray(v) for k, v in table.items()}
    return {str(c): np.asarray(table[c]) for c in table.columns}


def check_columns(spec: TrainSpec, columns: Mapping[str, str]) -> None:
    """Submit-time check against a dataset's schema (column -> dtype name)."""
    d = spec.data
    named = [("target", d.target)] + [(f, getattr(d, f)) for f in INPUT_FIELD.values()]
    named += [("features", f) for f in d.features or []]
    for where, name in named:
        if name is not None and name not in columns:
            have = ", ".join(sorted(columns)[:20])
            raise ValueError(f"data.{where}: column {name!r} is not in the dataset (has: {have})")
    if spec.model.architecture in ("mlp", "autoencoder") and d.image_field is None:
        chosen = d.features or [c for c in columns if c != d.target and _numeric(columns[c])]
        if not chosen:
            raise ValueError("data.features: the dataset has no numeric feature columns")
        for name in chosen:
            if not _numeric(columns[name]):
                raise ValueError(f"data.features: column {name!r} is not numeric")


def prepare(spec: TrainSpec, table: Table) -> PreparedData:
    return prepare_federated(spec, [table])[0]


def prepare_federated(spec: TrainSpec, tables: Sequence[Table]) -> list[PreparedData]:
    """Each table split on its own; one encoding fitted from their training statistics."""
    raws = [_extract(spec, to_columns(t)) for t in tables]
    task = spec.task or _infer_task(spec, [r.y for r in raws])
    classes = _classes([r.y for r in raws]) if task == "classification" else []
    splits = [_split(r, classes, spec) for r in raws]
    enc = _fit(spec, task, raws, splits, classes)
    out = []
    for raw, (tr, va) in zip(raws, splits, strict=True):
        x, y = _encode_x(raw.x, enc, spec), _encode_y(raw, enc)
        out.append(PreparedData(x[tr], y[tr], x[va], y[va], enc))
    return out


@dataclass
class _Raw:
    kind: InputKind
    x: np.ndarray  # float32 features / images / sequences, or object array of texts
    y: np.ndarray | None
    names: list[str]


def _present(value: Any) -> bool:
    try:
        return value is not None and bool(value == value)  # NaN != NaN
    except TypeError:  # pandas.NA refuses to be a bool
        return False


def _numeric(dtype: str) -> bool:
    return not dtype.lower().startswith(_NOT_NUMERIC)


def _column(cols: Mapping[str, np.ndarray], name: str, where: str) -> np.ndarray:
    if name not in cols:
        raise ValueError(f"data.{where}: column {name!r} is not in the dataset")
    return cols[name]


def _floats(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype == object:  # a DataFrame column holding one array per row
        a = np.stack([np.asarray(v) for v in a])
    try:
        return np.asarray(a, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data.{where}: values are not numeric ({exc})") from exc


def _extract(spec: TrainSpec, cols: Mapping[str, np.ndarray]) -> _Raw:
    d, arch = spec.data, spec.model.architecture
    y = _column(cols, d.target, "target") if d.target is not None else None
    if d.text_field is not None:
        x = np.asarray(_column(cols, d.text_field, "text_field"), dtype=object)
        raw = _Raw("text", x, y, [d.text_field])
    elif d.sequence_field is not None:
        x = _floats(_column(cols, d.sequence_field, "sequence_field"), "sequence_field")
        x = x[:, :, None] if x.ndim == 2 else x
        if x.ndim != 3:
            raise ValueError(f"data.sequence_field: expected [N, T, F], got {list(x.shape)}")
        raw = _Raw("sequence", x, y, [f"{d.sequence_field}[{i}]" for i in range(x.shape[2])])
    elif d.image_field is not None:
        x = _images(_floats(_column(cols, d.image_field, "image_field"), "image_field"))
        size = spec.model.image_size
        if size is not None and x.shape[2:] != (size, size):
            raise ValueError(f"model.image_size is {size}, images are {list(x.shape[2:])}")
        if arch == "cnn":
            raw = _Raw("image", x, y, [d.image_field])
        else:
            x = x.reshape(len(x), -1)
            raw = _Raw("tabular", x, y, [f"{d.image_field}[{i}]" for i in range(x.shape[1])])
    else:
        names = d.features or [
            c for c, v in cols.items() if c != d.target and v.ndim == 1 and v.dtype.kind in "biuf"
        ]
        if not names:
            raise ValueError("data.features: the dataset has no numeric feature columns")
        x = np.stack([_floats(_column(cols, n, "features"), "features") for n in names], axis=1)
        raw = _Raw("tabular", x, y, list(names))
    if y is not None:
        keep = np.array([_present(v) for v in y], dtype=bool)
        raw.x, raw.y = raw.x[keep], y[keep]
    if len(raw.x) < 2:
        raise ValueError("the dataset has fewer than 2 usable rows")
    return raw


def _images(x: np.ndarray) -> np.ndarray:
    """[N, H, W] -> [N, 1, H, W]; channels-last [N, H, W, C] (C in 1, 3, 4) -> channels-first."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim != 4:
        raise ValueError(f"data.image_field: expected [N, H, W(, C)], got {list(x.shape)}")
    return x


def _infer_task(spec: TrainSpec, ys: list[np.ndarray | None]) -> Task:
    y = np.concatenate([v for v in ys if v is not None])
    if y.dtype.kind in "OUSb":
        return "classification"
    if y.dtype.kind in "iu" and len(np.unique(y)) <= spec.data.max_classes:
        return "classification"
    if y.dtype.kind in "iuf":  # floats, or integers with too many distinct values
        return "regression"
    raise ValueError(f"data.target: cannot learn from values of type {y.dtype}; set data.task")


def _classes(ys: list[np.ndarray | None]) -> list[str]:
    labels = [np.unique(y.astype(str) if y.dtype == object else y) for y in ys if y is not None]
    found = [str(v) for v in np.unique(np.concatenate(labels))]
    if len(found) < 2:
        raise ValueError(f"data.target: classification needs 2 or more classes, found {found}")
    return found


def _labels(y: np.ndarray, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in y], dtype=np.int64)


def _split(raw: _Raw, classes: list[str], spec: TrainSpec) -> tuple[np.ndarray, np.ndarray]:
    n, frac = len(raw.x), spec.data.validation_split
    rng = np.random.default_rng(spec.hyper.seed)
    groups = [np.arange(n)]
    if classes and raw.y is not None:  # stratified: each class split in the same proportion
        labels = _labels(raw.y, classes)
        groups = [np.flatnonzero(labels == c) for c in range(len(classes))]
    val = [rng.permutation(g)[: round(len(g) * frac)] for g in groups]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    if len(val_idx) == 0 or len(val_idx) == n:
        raise ValueError(f"data.validation_split {frac} leaves no training or validation rows")
    return np.setdiff1d(np.arange(n), val_idx), val_idx


def _moments(parts: list[np.ndarray], axes: tuple[int, ...]) -> tuple[list[float], list[float]]:
    """Mean and std per feature from per-part counts, sums and sums of squares (NaN skipped)."""
    n = sum(np.sum(~np.isnan(p), axis=axes) for p in parts)
    s = sum(np.nansum(p.astype(np.float64), axis=axes) for p in parts)
    ss = sum(np.nansum(p.astype(np.float64) ** 2, axis=axes) for p in parts)
    mean = s / np.maximum(n, 1)
    std = np.sqrt(np.maximum(ss / np.maximum(n, 1) - mean**2, 0.0))
    return mean.tolist(), np.where(std < 1e-6, 1.0, std).tolist()


def _fit(
    spec: TrainSpec,
    task: Task,
    raws: list[_Raw],
    splits: list[tuple[np.ndarray, np.ndarray]],
    classes: list[str],
) -> Encoding:
    first = raws[0]
    if any(r.kind != first.kind or r.x.shape[1:] != first.x.shape[1:] for r in raws):
        raise ValueError("participants' datasets have different inputs")
    enc = Encoding(first.kind, task, check_loss(spec.hyper.loss, task), first.names, [], classes)
    train_x = [r.x[tr] for r, (tr, _) in zip(raws, splits, strict=True)]
    if first.kind == "text":
        counts = sum((count_words(texts) for texts in train_x), Counter[str]())
        enc.vocab = build_vocab(counts, spec.model.vocab_size)
        enc.input_shape = [spec.model.max_len]
    else:
        axes = {"tabular": (0,), "sequence": (0, 1), "image": (0, 2, 3)}[first.kind]
        enc.mean, enc.std = _moments(train_x, axes)
        enc.input_shape = list(first.x.shape[1:])
    if task == "regression":
        ys = [_float_target(r.y)[tr] for r, (tr, _) in zip(raws, splits, strict=True)]
        enc.y_mean, enc.y_std = _moments(ys, (0,))
    elif task == "reconstruction":
        if first.kind != "tabular":
            raise ValueError("reconstruction needs tabular (or flattened image) inputs")
        enc.y_mean, enc.y_std = enc.mean, enc.std
    return enc


def _float_target(y: np.ndarray | None) -> np.ndarray:
    if y is None:
        raise ValueError("data.target is required for regression")
    return _floats(y, "target").reshape(len(y), 1)


def _encode_x(x: np.ndarray, enc: Encoding, spec: TrainSpec) -> np.ndarray:
    if enc.kind == "text":
        return tokenize(list(x), enc.vocab, spec.model.max_len)
    return x


def _encode_y(raw: _Raw, enc: Encoding) -> np.ndarray:
    if enc.task == "classification":
        if raw.y is None:
            raise ValueError("data.target is required for classification")
        return _labels(raw.y, enc.classes)
    if enc.task == "regression":
        return _float_target(raw.y)
    mean = np.asarray(enc.mean, dtype=np.float32)
    return np.where(np.isnan(raw.x), mean, raw.x).astype(np.float32)  # reconstruct x itself
