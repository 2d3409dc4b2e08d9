"""Dataset files built on the fly from scikit-learn's bundled data sets (nothing downloaded)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits, load_iris

IRIS_DTYPES = {
    "sepal length (cm)": "float64",
    "sepal width (cm)": "float64",
    "petal length (cm)": "float64",
    "petal width (cm)": "float64",
    "target": "int64",
    "species": "str",
}


def iris() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame: pd.DataFrame = bunch.frame
    frame["species"] = [str(bunch.target_names[t]) for t in frame["target"]]
    return frame


def write_iris(path: Path, fmt: str) -> Path:
    frame = iris()
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Digit images as uint8 [n, 8, 8] (0..16 scaled to 0..240) and their labels."""
    bunch = load_digits()
    images = (bunch.images[:n] * 15).astype(np.uint8)
    return images, bunch.target[:n].astype(np.int64)


def write_digits_npz(path: Path) -> Path:
    bunch = load_digits()
    np.savez_compressed(path, X=bunch.data, images=bunch.images, y=bunch.target)
    return path


def image_bytes(pixels: np.ndarray, ext: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format={"png": "PNG", "pgm": "PPM", "ppm": "PPM"}[ext])
    return buf.getvalue()


def write_digits_zip(path: Path, ext: str = "png", n: int = 200, top: str = "digits") -> Path:
    """``top/<digit>/<index>.<ext>``, plus a README that is not an image."""
    images, labels = digits(n)
    prefix = f"{top}/" if top else ""
    with zipfile.ZipFile(path, "w") as zf:
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            zf.writestr(f"{prefix}{label}/{i:04d}.{ext}", image_bytes(pixels, ext))
        zf.writestr(f"{prefix}README.txt", "8x8 digits")
    return path


def write_digits_folder(root: Path, n: int = 50) -> Path:
    images, labels = digits(n)
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{i:04d}.png").write_bytes(image_bytes(pixels, "png"))
    return root


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path
