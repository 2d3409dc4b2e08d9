"""TensorFlow Serving's Classify and Regress APIs over models that have no such signature.

TF Serving feeds ``tf.Example`` protos to a classification or regression
signature. Here each example's features (with the request's ``context``
merged in) become one row of the model's inputs, by name; features the model
does not take are ignored, as a parsing spec would. Which outputs answer:

- Regress: the one float output with one value per example (``[-1]`` or ``[-1, 1]``).
- Classify: a float output of per-class scores ``[-1, K]`` (one whose name says
  ``prob`` or ``score`` wins among several), and if present a string or integer
  output of the same shape with the class labels; otherwise a class's label is
  its column index, as ONNX models carry no class names.

The answer key is ``results``, as TF Serving's code writes it (its REST
documentation says ``result``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from modelplane.api.tfserving_codec import is_b64, json_type, load_object, tf_name, to_array
from modelplane.errors import BadRequest
from modelplane.runtimes.base import Arrays
from modelplane.schemas.registry import TensorSpec

RESULTS_KEY = "results"
_FLOATS = ("float16", "float32", "float64")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _features(value: Any) -> dict[str, list[Any]]:
    if not isinstance(value, dict):
        raise BadRequest(f"Example must be JSON object but got JSON {json_type(value)}")
    out: dict[str, list[Any]] = {}
    for name, content in value.items():
        values = content if isinstance(content, list) else [content]
        for v in values:
            if v is None or isinstance(v, list) or (isinstance(v, dict) and not is_b64(v)):
                raise BadRequest(
                    f"Feature: {name} has element with unexpected JSON type: {json_type(v)}"
                )
        out[name] = values
    return out


def _fit(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``[examples, values]`` reshaped to what the input takes per example."""
    if not spec.shape:
        return arr
    per_example = spec.shape[1:]
    try:
        return arr.reshape([arr.shape[0], *per_example])
    except ValueError:
        raise BadRequest(
            f"Feature: {spec.name} has {arr.shape[1]} value(s) per example but the model's "
            f"input {spec.name!r} takes shape {per_example} per example"
        ) from None


def decode_examples(body: bytes, specs: list[TensorSpec], method: str) -> tuple[Arrays, int]:
    """The model inputs for a ``:classify``/``:regress`` body, and the number of examples."""
    doc = load_object(body)
    context = _features(doc["context"]) if "context" in doc else {}
    if "examples" not in doc:
        raise BadRequest(f"When method is {method}, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise BadRequest("Expecting 'examples' value to be an list/array")
    if not examples:
        raise BadRequest("'examples' value is an empty array")
    rows = [context | _features(e) for e in examples]
    inputs: Arrays = {}
    for spec in specs:
        values = []
        for i, features in enumerate(rows):
            if spec.name not in features:
                raise BadRequest(
                    f"Feature: {spec.name} (data type: {tf_name(spec.dtype)}) is required "
                    f"but could not be found (example {i})."
                )
            values.append(features[spec.name])
        for i, v in enumerate(values):
            if len(v) != len(values[0]):
                raise BadRequest(
                    f"Feature: {spec.name} has {len(v)} value(s) in example {i} but "
                    f"{len(values[0])} in example 0"
                )
        inputs[spec.name] = _fit(to_array(values, spec, f"feature {spec.name!r}"), spec)
    return inputs, len(examples)


# -- which outputs answer -------------------------------------------------------------
def _describe(outputs: list[TensorSpec]) -> str:
    return ", ".join(f"{o.name}: {o.dtype}{o.shape}" for o in outputs) or "unknown"


def _width(spec: TensorSpec) -> int | None:
    """Values per example, when the signature says."""
    if not spec.shape or any(d < 0 for d in spec.shape[1:]):
        return None
    return int(np.prod(spec.shape[1:]))


def unsupported(api: str, model: str, outputs: list[TensorSpec]) -> BadRequest:
    need = {
        "Regress": "one float output with one value per example ([-1] or [-1, 1])",
        "Classify": "a float output of per-class scores, shape [-1, K]",
    }[api]
    return BadRequest(
        f"model {model!r} does not support the {api} API: it needs {need}; "
        f"its outputs are {_describe(outputs)}"
    )


def regress_output(model: str, outputs: list[TensorSpec]) -> str:
    fits = [o for o in outputs if o.dtype in _FLOATS and _width(o) in (1, None)]
    exact = [o for o in fits if _width(o) == 1]
    if len(exact) == 1:
        return exact[0].name
    if len(fits) == 1:
        return fits[0].name
    raise unsupported("Regress", model, outputs)


def classify_outputs(model: str, outputs: list[TensorSpec]) -> tuple[str, str | None]:
    scores = [o for o in outputs if o.dtype in _FLOATS and len(o.shape) == 2]
    named = [o for o in scores if any(k in o.name.lower() for k in ("prob", "score"))]
    if not scores:
        raise unsupported("Classify", model, outputs)
    best = (named or scores)[0]
    labels = [
        o
        for o in outputs
        if o is not best
        and o.dtype not in _FLOATS
        and len(o.shape) == 2
        and (o.shape[1] == best.shape[1] or -1 in (o.shape[1], best.shape[1]))
    ]
    return best.name, labels[0].name if labels else None


# -- answers ------------------------------------------------------------------------
def encode_regress(model: str, outputs: list[TensorSpec], arr: np.ndarray, n: int) -> bytes:
    if arr.dtype.kind != "f" or arr.ndim == 0 or arr.shape[0] != n or arr.size != n:
        raise unsupported("Regress", model, outputs)
    return orjson.dumps({RESULTS_KEY: np.ascontiguousarray(arr.reshape(n))}, option=_NUMPY)


def _label(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def encode_classify(
    model: str,
    outputs: list[TensorSpec],
    scores: np.ndarray,
    labels: np.ndarray | None,
    n: int,
) -> bytes:
    if scores.dtype.kind != "f" or scores.ndim != 2 or scores.shape[0] != n:
        raise unsupported("Classify", model, outputs)
    k = scores.shape[1]
    if labels is not None and labels.shape == scores.shape:
        names = [[_label(x) for x in row] for row in labels.tolist()]
    else:
        names = [[str(j) for j in range(k)]] * n
    scores = np.ascontiguousarray(scores)
    results = [[[names[i][j], scores[i, j]] for j in range(k)] for i in range(n)]
    return orjson.dumps({RESULTS_KEY: results}, option=_NUMPY)
