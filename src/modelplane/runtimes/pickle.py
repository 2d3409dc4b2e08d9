"""scikit-learn estimators saved with pickle or joblib: loaded only for trusted models.

Unpickling runs whatever code the file names, so this runtime refuses to load
unless an admin marked the model trusted (``RuntimeOptions.trusted``). Until
then nothing is unpickled anywhere: the upload check and the refusal message
only walk the opcode stream (``pickletools.genops``), which reads the file as
data and never imports or calls what it names.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickletools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from modelplane.errors import InvalidInput
from modelplane.runtimes.base import RuntimeOptions, single_file
from modelplane.runtimes.skops import SkopsRuntime, _signature

SUFFIXES = (".pkl", ".pickle", ".joblib")
_SKIP = 1 << 20  # opcode arguments longer than this are skipped, not read into memory
_LINE = 1 << 16
_STRINGS = {
    "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    "STRING", "BINSTRING", "SHORT_BINSTRING",
}  # fmt: skip
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_JOBLIB_ARRAY = "joblib.numpy_pickle.NumpyArrayWrapper"


@dataclass
class PickleScan:
    globals: list[str] = field(default_factory=list)  # what loading would import, in order
    complete: bool = True  # False: joblib's raw array bytes ended the opcode walk
    compression: str = ""


class _Skipped(bytes):
    """Stands for a long argument that was skipped: right length, no content."""

    length: int

    def __new__(cls, length: int) -> _Skipped:
        obj = super().__new__(cls, b"")
        obj.length = length
        return obj

    def __len__(self) -> int:
        return self.length


class _Walker:
    """The file-like genops reads from: bounded lines, long arguments skipped."""

    def __init__(self, fh: io.BufferedIOBase) -> None:
        self._fh = fh

    def read(self, n: int) -> bytes:
        if n <= _SKIP:
            return self._fh.read(n)
        left = n
        while left:
            got = len(self._fh.read(min(left, _SKIP)))
            if not got:
                return b""  # shorter than declared: genops reports the truncation
            left -= got
        return _Skipped(n)

    def readline(self) -> bytes:
        return self._fh.readline(_LINE)


class _ZlibReader(io.RawIOBase):
    """joblib's zlib-compressed files: a plain zlib stream."""

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__()
        self._fh = fh
        self._z = zlib.decompressobj()
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buf and not self._z.eof:
            data = self._z.unconsumed_tail or self._fh.read(1 << 16)
            if not data:
                raise EOFError("the compressed stream ends early")
            self._buf = self._z.decompress(data, 1 << 20)
        n = min(len(buffer), len(self._buf))
        buffer[:n], self._buf = self._buf[:n], self._buf[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open(path: Path) -> tuple[io.BufferedIOBase, str]:
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb"), "gzip"
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb"), "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb"), "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return lzma.open(path, "rb", format=lzma.FORMAT_ALONE), "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        raise InvalidInput("lz4-compressed joblib files are not accepted; use another compressor")
    if len(head) >= 2 and head[0] == 0x78 and int.from_bytes(head[:2], "big") % 31 == 0:
        raw = open(path, "rb")  # noqa: SIM115 - closed through the BufferedReader
        return io.BufferedReader(_ZlibReader(raw)), "zlib"
    return open(path, "rb"), ""


def scan_pickle(path: Path) -> PickleScan:
    """Walk a pickle (or joblib) file's opcodes without unpickling; 422 if it is not one."""
    try:
        fh, compression = _open(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read the artifact: {exc}") from exc
    scan = PickleScan(compression=compression)
    seen = 0
    try:
        with fh:
            for name in _globals(_Walker(fh), scan):
                seen += 1
                if name not in scan.globals:
                    scan.globals.append(name)
    except (ValueError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        if _JOBLIB_ARRAY in scan.globals:
            scan.complete = False  # joblib writes array bytes between the opcodes
            return scan
        raise InvalidInput(f"artifact is not a pickle stream: {exc}") from exc
    return scan


def _globals(f: _Walker, scan: PickleScan) -> Iterator[str]:
    """Yield ``module.name`` for each global the stream would import (GLOBAL, STACK_GLOBAL)."""
    memo: dict[Any, Any] = {}
    strings: list[str] = []  # string pushes since the last other opcode
    last: Any = None
    count = 0
    for op, arg, _ in pickletools.genops(f):  # type: ignore[arg-type]
        count += 1
        name = op.name
        if name in _STRINGS:
            last = arg if isinstance(arg, str) else str(arg)
            strings.append(last)
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in _PUTS:
            memo[arg] = last
        elif name in _GETS:
            last = memo.get(arg)
            if isinstance(last, str):
                strings.append(last)
        elif name in ("GLOBAL", "INST"):
            yield str(arg).replace(" ", ".", 1)
            strings, last = [], None
        elif name == "STACK_GLOBAL":
            yield f"{strings[-2]}.{strings[-1]}" if len(strings) >= 2 else "<computed>"
            strings, last = [], None
        elif name not in ("FRAME", "PROTO"):
            strings, last = [], None
    if count == 0:
        raise ValueError("empty file")


def untrusted_message(path: Path) -> str:
    try:
        scan = scan_pickle(path)
        names = ", ".join(scan.globals[:8]) + (", …" if len(scan.globals) > 8 else "")
        imports = f" (this one imports {names})" if names else ""
    except InvalidInput:
        imports = ""
    return (
        f"model is not trusted: a pickle runs code when it is loaded{imports}; "
        "an admin must mark the model trusted before it can be deployed"
    )


class PickleRuntime(SkopsRuntime):
    """Same predict and signature as skops estimators; only loading differs."""

    format = "pickle"

    @classmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> PickleRuntime:
        path = single_file(artifact_dir, SUFFIXES)
        if not options.trusted:
            raise InvalidInput(untrusted_message(path))
        import joblib  # type: ignore[import-untyped]  # reads plain pickles too (scikit-learn dep)

        estimator = joblib.load(path)  # runs the pickle: an admin marked this model trusted
        if not hasattr(estimator, "predict"):
            raise InvalidInput(f"pickle holds a {type(estimator).__name__}, not an estimator")
        sig = options.signature
        if sig is None or not sig.inputs:
            sig = _signature(estimator)
        return cls(estimator, sig)
