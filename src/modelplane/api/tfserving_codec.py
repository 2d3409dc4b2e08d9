"""TensorFlow Serving REST JSON ⇄ arrays, shaped and worded as TF Serving does.

The JSON carries no dtypes: each value is cast to the dtype the model's
signature gives its input, refusing what would change it (a fraction for an
integer input, a number too large for its type). Strings may come as
``{"b64": "..."}``; outputs whose name ends in ``_bytes`` go back that way.
Request shapes: ``instances`` (row format: one item per example, a value/list
for a single input or an object of named inputs) and ``inputs`` (columnar:
a value/list, or an object of named inputs). Classify/Regress requests carry
``examples`` (feature objects) and an optional ``context`` merged into each.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from modelplane.errors import BadRequest
from modelplane.runtimes.base import Arrays
from modelplane.schemas.registry import TensorSpec

TF_TYPES = {
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "bool": "DT_BOOL",
    "string": "DT_STRING",
}
# TensorFlow's DataTypeString names, as its error messages use them.
_TF_NAMES = {"float16": "half", "float32": "float", "float64": "double"}
_MAX_RANK = 32
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
DEFAULT_SIGNATURE = "serving_default"


def tf_name(dtype: str) -> str:
    return _TF_NAMES.get(dtype, dtype)


def json_text(value: Any, limit: int = 200) -> str:
    """A JSON value as text for an error message, cut short when long."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    return "Array" if isinstance(value, list) else "Object"


def load_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequest("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:  # the standard parser also takes NaN, Infinity and very deep nesting errors
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequest(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"JSON Value: {json_text(doc)} Is not object")
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise BadRequest("'signature_name' key must be a string value.")
    if name not in ("", DEFAULT_SIGNATURE):
        raise BadRequest(f'Serving signature name: "{name}" not found in signature def')
    return doc


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def is_object(value: Any) -> bool:
    """A JSON object that names inputs (a ``{"b64": ...}`` value is not one)."""
    return isinstance(value, dict) and not is_b64(value)


# -- JSON value -> array ------------------------------------------------------------
def _dims(value: Any) -> list[int]:
    dims: list[int] = []
    while isinstance(value, list):
        dims.append(len(value))
        if len(dims) > _MAX_RANK:
            raise BadRequest(f"lists nested deeper than {_MAX_RANK} levels")
        if not value:
            break
        value = value[0]
    return dims


def _collect(
    value: Any, dims: list[int], level: int, out: list[Any], leaf: Callable[[Any], Any]
) -> None:
    """Flatten ``value`` into ``out`` checking that it is dense with shape ``dims``."""
    if isinstance(value, list):
        if level >= len(dims):
            raise BadRequest(
                f"Encountered list at unexpected level: {level} expected < {len(dims)}"
            )
        if len(value) != dims[level]:
            raise BadRequest(
                f"Encountered list at unexpected size: {len(value)} at level: {level} "
                f"expected size: {dims[level]}"
            )
        for item in value:
            _collect(item, dims, level + 1, out, leaf)
        return
    if level != len(dims):
        raise BadRequest(
            f"JSON Value: {json_text(value)} found at incorrect level: {level + 1} "
            f"in the JSON DOM. Expected at level: {len(dims)}"
        )
    out.append(leaf(value))


def _type_error(value: Any, dtype: str) -> BadRequest:
    return BadRequest(
        f"JSON Value: {json_text(value)} Type: {json_type(value)} "
        f"is not of expected type: {tf_name(dtype)}"
    )


def _b64(value: Any) -> bytes:
    if not is_b64(value):
        raise BadRequest(f"JSON Value: {json_text(value)} not formatted correctly for base64 data")
    text = value["b64"]
    padded = (text + "=" * (-len(text) % 4)).encode()
    for altchars in (None, b"-_"):  # TF Serving also takes the URL-safe alphabet
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise BadRequest("Unable to base64 decode")


def _strings(value: Any) -> np.ndarray:
    def leaf(v: Any) -> str | bytes:
        if isinstance(v, str):
            return v
        if isinstance(v, dict):
            return _b64(v)
        raise _type_error(v, "string")

    dims = _dims(value)
    flat: list[Any] = []
    _collect(value, dims, 0, flat, leaf)
    if any(isinstance(x, bytes) for x in flat):
        # onnxruntime takes text; keep bytes only where they are not UTF-8 (one kind per tensor)
        try:
            flat = [x.decode() if isinstance(x, bytes) else x for x in flat]
        except UnicodeDecodeError:
            flat = [x.encode() if isinstance(x, str) else x for x in flat]
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return arr.reshape(dims)


def _accepts(dtype: str) -> Callable[[Any], bool]:
    if dtype == "bool":
        return lambda v: isinstance(v, bool)
    if dtype in ("float16", "float32", "float64", "unknown"):
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    info = np.iinfo(np.dtype(dtype))
    lo, hi = int(info.min), int(info.max)
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_leaves(value: Any, dtype: str) -> None:
    """Raise the error for the shape problem or the first value that does not fit ``dtype``."""
    ok = _accepts(dtype)

    def leaf(v: Any) -> Any:
        if not ok(v):
            raise _type_error(v, dtype)
        return v

    _collect(value, _dims(value), 0, [], leaf)


def _first_bad(value: Any, dtype: str) -> BadRequest:
    _check_leaves(value, dtype)
    return BadRequest(f"values do not fit dtype {tf_name(dtype)}")


def _lossy(value: Any, dtype: str) -> BadRequest:
    return BadRequest(
        f"Cannot convert JSON value: {json_text(value)} to {tf_name(dtype)} "
        "without loss of precision."
    )


def to_array(value: Any, spec: TensorSpec, where: str, bools: bool = True) -> np.ndarray:
    """A JSON value (scalar or nested lists) as an array of the input's dtype, or a 400.

    numpy would take ``true`` as 1 in a list of numbers; ``bools`` (the body has a
    ``true`` or ``false`` somewhere) makes a numeric input check each value.
    """
    try:
        if bools and spec.dtype not in ("string", "bool"):
            _check_leaves(value, "float64" if spec.dtype == "unknown" else spec.dtype)
        return _to_array(value, spec.dtype)
    except BadRequest as exc:
        raise BadRequest(f"{where}: {exc.message}") from None


def _to_array(value: Any, dtype: str) -> np.ndarray:
    if dtype == "string":
        return _strings(value)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise _first_bad(value, dtype) from None
    kind = arr.dtype.kind
    if arr.size == 0 and kind in "biufU":
        return arr.astype(np.float32 if dtype == "unknown" else np.dtype(dtype))
    if dtype == "unknown":
        if kind in "biuf":
            return arr
        raise _first_bad(value, "float64")
    target = np.dtype(dtype)
    if target.kind == "f" and kind in "iuf":
        with np.errstate(over="ignore"):
            out = arr.astype(target)
        if kind in "iu":
            limit = 2 ** (np.finfo(target).nmant + 1) - 1
            big = np.abs(arr.astype(np.float64)) > limit
            if big.any():
                raise _lossy(arr.flat[int(np.argmax(big))].item(), dtype)
        elif target.itemsize < arr.dtype.itemsize:
            overflow = np.isinf(out) & np.isfinite(arr)
            if overflow.any():
                raise _lossy(arr.flat[int(np.argmax(overflow))].item(), dtype)
        return out
    if target.kind in "iu" and kind in "iu":
        info = np.iinfo(target)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise _first_bad(value, dtype)
        return arr.astype(target)
    if target.kind == "b" and kind == "b":
        return arr
    raise _first_bad(value, dtype)


# -- predict -----------------------------------------------------------------------
def decode_predict(body: bytes, specs: list[TensorSpec]) -> tuple[Arrays, bool]:
    """The inputs of a ``:predict`` body and whether it used the row (``instances``) format."""
    doc = load_object(body)
    if not specs:
        raise BadRequest(f"Failed to get input map for signature: {DEFAULT_SIGNATURE}")
    if "instances" in doc and "inputs" in doc:
        raise BadRequest(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    bools = b"true" in body or b"false" in body
    if "instances" in doc:
        return _rows(doc["instances"], specs, bools), True
    if "inputs" in doc:
        return _columns(doc["inputs"], specs, bools), False
    raise BadRequest("Missing 'inputs' or 'instances' key")


def _rows(instances: Any, specs: list[TensorSpec], bools: bool) -> Arrays:
    if not isinstance(instances, list):
        raise BadRequest("Expecting 'instances' to be an list/array")
    if not instances:
        raise BadRequest("No values in 'instances' array")
    by_name = {s.name: s for s in specs}
    if not is_object(instances[0]):
        if len(specs) > 1:
            raise BadRequest(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map"
            )
        for i, item in enumerate(instances):
            if is_object(item):
                raise BadRequest(f"Expecting value/list but got object at item {i} of input list")
        return {specs[0].name: to_array(instances, specs[0], f"input {specs[0].name!r}", bools)}
    columns: dict[str, list[Any]] = {name: [] for name in by_name}
    for i, item in enumerate(instances):
        if not is_object(item):
            raise BadRequest(f"Expecting object but got list at item {i} of input list")
        for key in item:
            if key not in by_name:
                raise BadRequest(
                    f"Failed to process element: {i} key: {key} of 'instances' list. "
                    f"Error: JSON object: does not have named input: {key}"
                )
        if len(item) != len(by_name):
            raise BadRequest(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{json_text(item)} keys must be equal to: {','.join(sorted(by_name))}"
            )
        for key, value in item.items():
            columns[key].append(value)
    return {n: to_array(v, by_name[n], f"input {n!r}", bools) for n, v in columns.items()}


def _columns(inputs: Any, specs: list[TensorSpec], bools: bool) -> Arrays:
    if not is_object(inputs):
        if len(specs) > 1:
            raise BadRequest(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        return {specs[0].name: to_array(inputs, specs[0], f"input {specs[0].name!r}", bools)}
    names = {s.name for s in specs}
    for key in inputs:
        if key not in names:
            raise BadRequest(
                f"JSON object: does not have named input: {key} "
                f"(the model's inputs are {','.join(sorted(names))})"
            )
    for spec in specs:
        if spec.name not in inputs:
            raise BadRequest(f"Missing named input: {spec.name} in 'inputs' object.")
    return {s.name: to_array(inputs[s.name], s, f"input {s.name!r}", bools) for s in specs}


def _text(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_text(v, as_b64) for v in value]
    if isinstance(value, str):
        return {"b64": base64.b64encode(value.encode()).decode()} if as_b64 else value
    if isinstance(value, bytes):
        if not as_b64:
            try:
                return value.decode()
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode()}
    return str(value)


def jsonable(name: str, arr: np.ndarray) -> Any:
    """An output as orjson writes it (float32 stays short: 0.2, not 0.20000000298)."""
    kind = arr.dtype.kind
    if kind in "OUS":
        return _text(arr.tolist(), name.endswith("_bytes"))
    if kind not in "biuf":
        raise BadRequest(f"Failed to write JSON value for tensor type: {arr.dtype}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    return arr.reshape(1)[0] if arr.ndim == 0 else arr


def encode_predict(outputs: Arrays, row: bool) -> bytes:
    if not outputs:
        raise BadRequest("Cannot convert empty tensor map to JSON")
    values = {name: jsonable(name, arr) for name, arr in outputs.items()}
    single = next(iter(values.values())) if len(values) == 1 else None
    if not row:
        return orjson.dumps({"outputs": values if single is None else single}, option=_NUMPY)
    batch = -1
    for name, arr in outputs.items():
        if arr.ndim == 0:
            raise BadRequest(f"Tensor name: {name} has no shape information")
        if batch >= 0 and arr.shape[0] != batch:
            raise BadRequest(
                f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} "
                f"expecting: {batch}"
            )
        batch = arr.shape[0]
    if single is not None:
        return orjson.dumps({"predictions": single}, option=_NUMPY)
    rows = [{name: v[i] for name, v in values.items()} for i in range(batch)]
    return orjson.dumps({"predictions": rows}, option=_NUMPY)
