"""Upload a fitted scikit-learn estimator, converted to ONNX on the client with skl2onnx.

The server never unpickles anything: it receives an ONNX graph (format
``sklearn_onnx``) and serves it with onnxruntime. The ONNX model takes one
input, ``input`` (float32 [-1, n_features], or the sample's own numeric dtype
when it is float64 / int64), and, for classifiers, outputs ``label`` and
``probabilities`` (a plain tensor: converted with ``zipmap`` off); regressors
output ``variable``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelplane.schemas.registry import Version

if TYPE_CHECKING:
    from modelplane.client.http import Client

INPUT = "input"


def _classifiers(estimator: Any) -> list[Any]:
    """The estimator, or a pipeline's final step, when it is a classifier (for zipmap off)."""
    from sklearn.base import is_classifier

    found = [estimator] if is_classifier(estimator) else []
    steps = getattr(estimator, "steps", None)
    if steps:
        found += _classifiers(steps[-1][1])
    return found


def _initial_types(sample: np.ndarray) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType

    if sample.ndim != 2:
        raise ValueError(f"sample_X must be 2-D (rows, features), got shape {sample.shape}")
    width = int(sample.shape[1])
    if sample.dtype == np.float64:
        return [(INPUT, DoubleTensorType([None, width]))]
    if sample.dtype.kind in "iu":
        return [(INPUT, Int64TensorType([None, width]))]
    return [(INPUT, FloatTensorType([None, width]))]


def to_onnx_bytes(estimator: Any, sample_X: Any, *, dtype: Any = np.float32) -> bytes:
    """Convert ``estimator`` with skl2onnx; ``sample_X`` sets the input's dtype and width.

    ``dtype`` (float32 by default, the widest-supported ONNX type) is applied to
    the sample first; pass ``None`` to keep the sample's dtype.
    """
    from skl2onnx import to_onnx

    sample = np.asarray(sample_X)
    if dtype is not None:
        sample = sample.astype(dtype)
    options = {id(c): {"zipmap": False} for c in _classifiers(estimator)}
    onx = to_onnx(estimator, initial_types=_initial_types(sample), options=options or None)
    return bytes(onx.SerializeToString())


def upload_sklearn(
    client: Client,
    model: str,
    estimator: Any,
    sample_X: Any,
    *,
    dtype: Any = np.float32,
    **metadata: Any,
) -> Version:
    """Convert ``estimator`` to ONNX and upload it as ``model``'s next version (``sklearn_onnx``).

    ``metadata`` takes ``Client.upload_version``'s keywords (description, params,
    metrics, tags, parents, source, progress); ``source`` gains the library versions.
    """
    import skl2onnx
    import sklearn

    data = to_onnx_bytes(estimator, sample_X, dtype=dtype)
    metadata["source"] = {
        "library": "scikit-learn",
        "sklearn_version": sklearn.__version__,
        "converter": f"skl2onnx {skl2onnx.__version__}",
        "estimator": type(estimator).__name__,
        **(metadata.get("source") or {}),
    }
    with tempfile.TemporaryDirectory(prefix="modelplane-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        return client.upload_version(model, path, "sklearn_onnx", **metadata)
