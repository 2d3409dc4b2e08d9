"""Frames between the gateway and its worker processes.

A frame is ``u32 header length | u32 payload length | header (JSON) | payload``.
Small arrays travel in the payload over the socket. Large ones (>= SHM_MIN
bytes) go through a shared-memory arena that the gateway creates per worker
and per direction, so a big tensor costs one copy in and one out instead of
several through the kernel and the stream buffers. An arena is used only when
the frame is the only call in flight on that worker, so a region is never
overwritten while the other side may still read it. Object arrays (strings or
bytes) travel as u32-length-prefixed items.
"""

from __future__ import annotations

import contextlib
import math
import struct
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import orjson

PREFIX = struct.Struct("<II")
SHM_MIN = 64 * 1024
_LEN = struct.Struct("<I")
_INLINE, _SHARED = 0, 1


class Arena:
    """One shared-memory region written by one side and read by the other."""

    def __init__(self, shm: SharedMemory, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.size = shm.size
        assert shm.buf is not None
        self.buf: memoryview = shm.buf

    @classmethod
    def create(cls, size: int) -> Arena:
        return cls(SharedMemory(create=True, size=size), owner=True)

    @classmethod
    def attach(cls, name: str) -> Arena:
        shm = SharedMemory(name=name)
        # Python < 3.13 registers attached segments too and would unlink them when this
        # process exits; the creating side owns the segment's lifetime.
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        return cls(shm, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    def close(self) -> None:
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()
        self.buf.release()
        with contextlib.suppress(BufferError):  # an array still views it: the mapping stays
            self.shm.close()


def _encode_objects(arr: np.ndarray) -> tuple[str, bytes]:
    items = arr.ravel().tolist()
    # One kind per array: all str stays str; anything else travels as bytes.
    kind = "str" if all(isinstance(x, str) for x in items) else "bytes"
    parts = []
    for item in items:
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return kind, b"".join(parts)


def _decode_objects(buf: memoryview, kind: str, shape: list[int]) -> np.ndarray:
    count = math.prod(shape)
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        (n,) = _LEN.unpack_from(buf, pos)
        raw = bytes(buf[pos + 4 : pos + 4 + n])
        out[i] = raw.decode() if kind == "str" else raw
        pos += 4 + n
    return out.reshape(shape)


def encode(
    header: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
    arena: Arena | None = None,
) -> list[bytes | memoryview]:
    """Build a frame as a list of buffers (for ``writelines``; inline data is not copied)."""
    buffers: list[bytes | memoryview] = []
    specs = []
    offset = 0
    shared = 0
    for name, arr in (arrays or {}).items():
        if arr.dtype == object:
            kind, raw = _encode_objects(arr)
            specs.append([name, kind, list(arr.shape), offset, len(raw), _INLINE])
            buffers.append(raw)
            offset += len(raw)
            continue
        n = arr.nbytes
        if arena is not None and n >= SHM_MIN and shared + n <= arena.size:
            dst = np.ndarray(arr.shape, dtype=arr.dtype, buffer=arena.buf, offset=shared)
            np.copyto(dst, arr, casting="no")
            specs.append([name, arr.dtype.str, list(arr.shape), shared, n, _SHARED])
            shared += n
            continue
        shape = list(arr.shape)  # before ascontiguousarray, which makes 0-d arrays 1-d
        arr = np.ascontiguousarray(arr)
        view = arr.data.cast("B") if n else memoryview(b"")
        specs.append([name, arr.dtype.str, shape, offset, n, _INLINE])
        buffers.append(view)
        offset += n
    head = orjson.dumps({**header, "arrays": specs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return [PREFIX.pack(len(head), offset), head, *buffers]


def decode(
    head: bytes, payload: bytes, arena: Arena | None = None, copy_shared: bool = False
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Rebuild a frame. Shared arrays are views into the arena unless ``copy_shared``."""
    header: dict[str, Any] = orjson.loads(head)
    buf = memoryview(payload)
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape, offset, nbytes, where in header.pop("arrays", []):
        if dtype in ("str", "bytes"):
            arrays[name] = _decode_objects(buf[offset : offset + nbytes], dtype, shape)
            continue
        dt = np.dtype(dtype)
        count = nbytes // dt.itemsize if dt.itemsize else 0
        if where == _SHARED:
            if arena is None:
                raise ValueError(f"array {name!r} is in shared memory but no arena is attached")
            view = np.frombuffer(arena.buf, dtype=dt, count=count, offset=offset)
            arrays[name] = (view.copy() if copy_shared else view).reshape(shape)
        else:
            arrays[name] = np.frombuffer(payload, dtype=dt, count=count, offset=offset).reshape(
                shape
            )
    return header, arrays
