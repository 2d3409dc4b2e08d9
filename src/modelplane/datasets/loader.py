"""Load a stored dataset file into memory for training: a pure function, no HTTP, no database.

- csv, jsonl, parquet -> ``pandas.DataFrame``
- npz -> ``dict[str, numpy.ndarray]`` (opened with ``allow_pickle=False``)
- images -> ``ImageData``: ``X`` uint8 ``[n, h, w, c]`` (float32 in [0, 1] with
  ``scale=True``), ``y`` int64 class indices, ``classes`` the sorted class names
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd

from modelplane.datasets import images
from modelplane.datasets.schema import CHUNK_ROWS, check_format, iter_jsonl
from modelplane.errors import InvalidInput


@dataclass(frozen=True)
class ImageData:
    X: np.ndarray
    y: np.ndarray
    classes: list[str]


Loaded: TypeAlias = pd.DataFrame | dict[str, np.ndarray] | ImageData


def load_dataset(
    path: str | Path,
    format: str,
    *,
    scale: bool = False,
    image_size: tuple[int, int] | None = None,
) -> Loaded:
    """Read ``path`` (a blob the upload already validated) as ``format``.

    ``image_size`` (h, w) resizes images (Pillow); without it they must all share a size.
    """
    path = Path(path)
    check_format(format)
    if format == "csv":
        return pd.read_csv(path)
    if format == "jsonl":
        frames = list(iter_jsonl(path, CHUNK_ROWS))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if format == "parquet":
        return pd.read_parquet(path)
    if format == "npz":
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    return load_images(path, scale=scale, size=image_size)


def load_images(
    path: Path, *, scale: bool = False, size: tuple[int, int] | None = None
) -> ImageData:
    with zipfile.ZipFile(path) as zf:
        found, _ = images.entries(zf)
        if not found:
            raise InvalidInput("archive holds no images")
        arrays = [images.decode(images.read_member(zf, e), e.member, size) for e in found]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise InvalidInput(
            f"images differ in size ({', '.join(f'{h}x{w}' for h, w in sorted(shapes))}); "
            "pass image_size=(h, w) to resize them"
        )
    if any(a.shape[2] == 3 for a in arrays):  # some colour: make every image RGB
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    X = np.stack(arrays)
    classes = sorted({e.label for e in found})
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[e.label] for e in found], dtype=np.int64)
    if scale:
        return ImageData(X.astype(np.float32) / 255.0, y, classes)
    return ImageData(X, y, classes)
