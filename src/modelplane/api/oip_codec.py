"""Open Inference Protocol v2 tensors: JSON and the binary tensor data extension.

Request: JSON ``{"id", "parameters", "inputs": [{name, shape, datatype, data |
parameters.binary_data_size}], "outputs": [{name, parameters.binary_data}]}``;
with ``Inference-Header-Content-Length: N`` the first N body bytes are that JSON
and the rest are the binary inputs, in order. BYTES elements in binary form are
u32-little-endian-length-prefixed.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from modelplane.errors import BadRequest
from modelplane.serving.dataplane import InferenceRequest, InferenceResponse

TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
FROM_NUMPY = {v.str: k for k, v in TO_NUMPY.items()}
SIGNATURE_TYPES = {str(v): k for k, v in TO_NUMPY.items()} | {"string": "BYTES"}
_LEN = struct.Struct("<I")


def oip_datatype(arr: np.ndarray) -> str:
    if arr.dtype == object or arr.dtype.kind in "US":
        return "BYTES"
    try:
        return FROM_NUMPY[arr.dtype.str]
    except KeyError as exc:
        raise BadRequest(f"dtype {arr.dtype} has no Open Inference Protocol datatype") from exc


MAX_ELEMENTS = 1 << 31


def _shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    if math.prod(shape) > MAX_ELEMENTS:
        raise BadRequest(f"input {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements")
    return shape


def _params(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return value


def _from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    count = math.prod(shape)
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=object).ravel()
            if any(not isinstance(x, str | bytes) for x in flat):
                raise BadRequest(f"input {name!r}: BYTES data must be strings")
            arr = flat
        else:
            arr = np.asarray(data, dtype=TO_NUMPY[datatype]).ravel()
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(
            f"input {name!r}: data does not fit datatype {datatype} or is ragged ({exc})"
        ) from exc
    if arr.size != count:
        raise BadRequest(
            f"input {name!r}: shape {shape} needs {count} elements, data has {arr.size}"
        )
    return arr.reshape(shape)


def _from_binary(name: str, datatype: str, shape: list[int], raw: memoryview) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        pos = 0
        for i in range(count):
            if pos + 4 > len(raw):
                raise BadRequest(f"input {name!r}: binary BYTES data is truncated")
            (n,) = _LEN.unpack_from(raw, pos)
            if pos + 4 + n > len(raw):
                raise BadRequest(f"input {name!r}: binary BYTES data is truncated")
            out[i] = bytes(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        if pos != len(raw):
            raise BadRequest(f"input {name!r}: binary BYTES data has trailing bytes")
        return out.reshape(shape)
    dt = TO_NUMPY[datatype]
    if len(raw) != count * dt.itemsize:
        raise BadRequest(
            f"input {name!r}: binary_data_size {len(raw)} does not match shape {shape} "
            f"of {datatype} ({count * dt.itemsize} bytes)"
        )
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def decode(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bool, set[str]]:
    """Returns the request, whether all outputs go binary, and which outputs go binary."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise BadRequest("Inference-Header-Content-Length is not a valid length for this body")
        json_part, binary = body[:n], memoryview(body)[n:]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest("request needs a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    inputs: dict[str, np.ndarray] = {}
    pos = 0
    for item in doc["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest("every input needs a 'name'")
        name = item["name"]
        if name in inputs:
            raise BadRequest(f"input {name!r} given twice")
        datatype = item.get("datatype")
        if datatype not in TO_NUMPY and datatype != "BYTES":
            raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}")
        shape = _shape(name, item.get("shape"))
        size = _params(f"input {name!r}", item.get("parameters")).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size runs past the end of the body")
            inputs[name] = _from_binary(name, datatype, shape, binary[pos : pos + size])
            pos += size
        elif "data" in item:
            inputs[name] = _from_json(name, datatype, shape, item["data"])
        else:
            raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
    if pos != len(binary):
        raise BadRequest("binary body has bytes that no input claims")
    outputs, binary_names = None, set()
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for o in doc["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest("every requested output needs a 'name'")
            outputs.append(o["name"])
            if _params(f"output {o['name']!r}", o.get("parameters")).get("binary_data"):
                binary_names.add(o["name"])
    timeout_us = params.get("timeout")
    request = InferenceRequest(
        inputs=inputs,
        outputs=outputs,
        id=str(doc["id"]) if doc.get("id") is not None else None,
        timeout_ms=timeout_us / 1000 if isinstance(timeout_us, int) and timeout_us > 0 else None,
        parameters=params,
    )
    return request, bool(params.get("binary_data_output")), binary_names


def _bytes_blob(arr: np.ndarray) -> bytes:
    parts = []
    for x in arr.ravel().tolist():
        raw = x.encode() if isinstance(x, str) else bytes(x)
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode(
    resp: InferenceResponse, all_binary: bool, binary_names: set[str]
) -> tuple[bytes, int | None]:
    """Returns the body and, when binary outputs follow the JSON, the JSON length."""
    outs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in resp.outputs.items():
        datatype = oip_datatype(arr)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if all_binary or name in binary_names:
            raw = _bytes_blob(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [
                x.decode("utf-8", "replace") if isinstance(x, bytes) else x
                for x in arr.ravel().tolist()
            ]
        else:
            entry["data"] = np.ascontiguousarray(arr).ravel()
        outs.append(entry)
    doc: dict[str, Any] = {
        "model_name": resp.model,
        "model_version": str(resp.version),
        "outputs": outs,
    }
    if resp.id is not None:
        doc["id"] = resp.id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
