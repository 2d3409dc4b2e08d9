"""scikit-learn estimators saved with skops, loaded only with explicitly trusted types.

skops refuses to build any type it does not trust by default. We trust the rest
of a file's types only when every one is a class from scikit-learn, numpy or
scipy, or a numpy ufunc; functions such as ``numpy.save`` or ``posix.system``
(which a ``FunctionTransformer`` would call at predict time) are refused, and
so is everything else, unless an admin marked the model trusted.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.errors import InvalidInput
from modelplane.runtimes.base import Arrays, Runtime, RuntimeOptions, single_file
from modelplane.schemas.registry import Signature, TensorSpec

ALLOWED_PACKAGES = ("sklearn", "numpy", "scipy")
INPUT = "input"


def allowed_type(qualname: str) -> bool:
    """Whether ``qualname`` names a class of an allowed package, or a numpy ufunc."""
    package = qualname.split(".", 1)[0]
    if package not in ALLOWED_PACKAGES:
        return False
    module_name, _, attr = qualname.rpartition(".")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        return False
    if isinstance(obj, np.ufunc):
        return True
    return isinstance(obj, type) and obj.__module__.split(".", 1)[0] in ALLOWED_PACKAGES


def untrusted_types(path: Path, trusted: bool) -> list[str]:
    """The types skops needs trusted for ``path``; raises naming any we refuse."""
    import skops.io as sio

    needed: list[str] = list(sio.get_untrusted_types(file=path))
    refused = [t for t in needed if not allowed_type(t)]
    if refused and not trusted:
        raise InvalidInput(
            f"skops file holds types outside the allow-list ({', '.join(ALLOWED_PACKAGES)} "
            f"classes): {', '.join(sorted(refused))}; an admin must mark the model trusted"
        )
    return needed


class SkopsRuntime(Runtime):
    format = "skops"

    def __init__(self, estimator: Any, signature: Signature) -> None:
        self.estimator = estimator
        self._sig = signature
        self._proba = hasattr(estimator, "predict_proba")
        first = signature.inputs[0] if signature.inputs else None
        known = first is not None and first.dtype not in ("unknown", "string")
        self._dtype = np.dtype(first.dtype) if first is not None and known else None

    @classmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> SkopsRuntime:
        import skops.io as sio

        path = single_file(artifact_dir, (".skops",))
        estimator = sio.load(path, trusted=untrusted_types(path, options.trusted))
        if not hasattr(estimator, "predict"):
            raise InvalidInput(f"skops file holds a {type(estimator).__name__}, not an estimator")
        sig = options.signature
        if sig is None or not sig.inputs:
            sig = _signature(estimator)
        return cls(estimator, sig)

    def metadata(self) -> Signature:
        return self._sig

    def predict(self, inputs: Arrays) -> Arrays:
        x = inputs.get(INPUT)
        if x is None:
            x = next(iter(inputs.values()))
        if self._dtype is not None and x.dtype != self._dtype and x.dtype != object:
            x = x.astype(self._dtype)
        label = np.asarray(self.estimator.predict(x))
        if label.dtype.kind in "UO":  # string class labels travel as object arrays
            label = label.astype(object)
        out: Arrays = {"label": label}
        if self._proba:
            out["probabilities"] = np.asarray(self.estimator.predict_proba(x))
        return out

    def warmup(self) -> None:
        if self._dtype is not None:
            super().warmup()


def _signature(estimator: Any) -> Signature:
    features = getattr(estimator, "n_features_in_", None)
    # Without n_features_in_ (text pipelines, …) the input's dtype is not known.
    inputs = [
        TensorSpec(name=INPUT, dtype="float64", shape=[-1, int(features)])
        if features
        else TensorSpec(name=INPUT, dtype="unknown", shape=[])
    ]
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        classes = np.asarray(classes)
        kind = "string" if classes.dtype.kind in "UO" else str(classes.dtype)
        outputs = [TensorSpec(name="label", dtype=kind, shape=[-1])]
    else:
        outputs = [TensorSpec(name="label", dtype="float64", shape=[-1])]
    if hasattr(estimator, "predict_proba"):
        width = len(classes) if classes is not None else -1
        outputs.append(TensorSpec(name="probabilities", dtype="float64", shape=[-1, width]))
    return Signature(inputs=inputs, outputs=outputs)
