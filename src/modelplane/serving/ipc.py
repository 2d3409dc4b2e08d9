"""Frames between the gateway and its worker processes.

A frame is ``u32 header length | u32 payload length | header (JSON) | payload``.
Numeric arrays travel as raw bytes in the payload and are rebuilt with
``np.frombuffer`` (no copy on the receiving side); object arrays (strings or
bytes) travel as u32-length-prefixed items.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

PREFIX = struct.Struct("<II")
_LEN = struct.Struct("<I")


def _encode_objects(arr: np.ndarray) -> tuple[str, bytes]:
    items = arr.ravel().tolist()
    kind = "str" if items and isinstance(items[0], str) else "bytes"
    parts = []
    for item in items:
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return kind, b"".join(parts)


def _decode_objects(buf: memoryview, kind: str, shape: list[int]) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        (n,) = _LEN.unpack_from(buf, pos)
        raw = bytes(buf[pos + 4 : pos + 4 + n])
        out[i] = raw.decode() if kind == "str" else raw
        pos += 4 + n
    return out.reshape(shape)


def encode(
    header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
) -> list[bytes | memoryview]:
    """Build a frame as a list of buffers (for ``writelines``; numeric data is not copied)."""
    buffers: list[bytes | memoryview] = []
    specs = []
    offset = 0
    for name, arr in (arrays or {}).items():
        if arr.dtype == object:
            kind, raw = _encode_objects(arr)
            specs.append([name, kind, list(arr.shape), offset, len(raw)])
            buffers.append(raw)
            offset += len(raw)
        else:
            arr = np.ascontiguousarray(arr)
            view = arr.data.cast("B") if arr.nbytes else memoryview(b"")
            specs.append([name, arr.dtype.str, list(arr.shape), offset, arr.nbytes])
            buffers.append(view)
            offset += arr.nbytes
    head = orjson.dumps({**header, "arrays": specs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return [PREFIX.pack(len(head), offset), head, *buffers]


def decode(head: bytes, payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    header: dict[str, Any] = orjson.loads(head)
    buf = memoryview(payload)
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape, offset, nbytes in header.pop("arrays", []):
        if dtype in ("str", "bytes"):
            arrays[name] = _decode_objects(buf[offset : offset + nbytes], dtype, shape)
        else:
            dt = np.dtype(dtype)
            arrays[name] = np.frombuffer(
                payload, dtype=dt, count=nbytes // dt.itemsize if dt.itemsize else 0, offset=offset
            ).reshape(shape)
    return header, arrays
