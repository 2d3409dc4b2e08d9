"""Infer a dataset's schema (columns, dtypes, rows) from its file; 422 when it does not parse.

Blocking (reads the whole file for CSV, JSONL, NPZ): call it from a worker thread.
Nothing here unpickles: NPZ is opened with ``allow_pickle=False`` and an array
of Python objects is refused by its header, before any of its bytes are read.
"""

from __future__ import annotations

import math
import zipfile
from collections import Counter
from collections.abc import Generator
from pathlib import Path, PurePath

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modelplane.datasets import images
from modelplane.errors import InvalidInput
from modelplane.schemas.datasets import FORMATS, Column, DatasetSchema
from modelplane.storage.archives import inspect_archive

CHUNK_ROWS = 100_000
MAX_LINE_BYTES = 64 * 1024**2
IMAGE_SAMPLES_PER_CLASS = 2
IMAGE_SAMPLES = 32
_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".zip": "images",
}
_NPY_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def format_from_filename(filename: str) -> str:
    fmt = _SUFFIXES.get(PurePath(filename).suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"cannot tell the format of {filename!r} from its extension; send 'format' "
            f"(one of {', '.join(FORMATS)})"
        )
    return fmt


def infer_schema(path: Path, fmt: str, max_unpacked_bytes: int, max_members: int) -> DatasetSchema:
    """The schema of ``path`` read as ``fmt``; ``InvalidInput`` naming why it does not parse."""
    check_format(fmt)
    if fmt == "csv":
        return _table("CSV", _csv_chunks(path))
    if fmt == "jsonl":
        return _table("JSONL", iter_jsonl(path, CHUNK_ROWS))
    if fmt == "parquet":
        return _parquet(path)
    if fmt == "npz":
        return _npz(path, max_unpacked_bytes, max_members)
    return _images(path, max_unpacked_bytes, max_members)


# -- tables --------------------------------------------------------------------
def _csv_chunks(path: Path) -> Generator[pd.DataFrame]:
    with pd.read_csv(path, chunksize=CHUNK_ROWS) as reader:
        yield from reader


def iter_jsonl(path: Path, chunk_rows: int) -> Generator[pd.DataFrame]:
    """One DataFrame per ``chunk_rows`` records; every non-blank line must be a JSON object."""
    batch: list[dict[str, object]] = []
    with open(path, "rb") as fh:
        number = 0
        while line := fh.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise InvalidInput(
                    f"file is not valid JSONL: line {number} is longer than {MAX_LINE_BYTES} bytes"
                )
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"file is not valid JSONL: line {number}: {exc}") from exc
            if not isinstance(record, dict):
                raise InvalidInput(
                    f"file is not valid JSONL: line {number} is a JSON "
                    f"{type(record).__name__}, not an object"
                )
            batch.append(record)
            if len(batch) >= chunk_rows:
                yield pd.DataFrame.from_records(batch)
                batch = []
    if batch:
        yield pd.DataFrame.from_records(batch)


def _table(what: str, chunks: Generator[pd.DataFrame]) -> DatasetSchema:
    """Columns and dtypes as reading the whole file into one DataFrame would give them."""
    rows = 0
    proto: pd.DataFrame | None = None  # one row per chunk: enough to merge dtypes like concat
    try:
        for chunk in chunks:
            rows += len(chunk)
            head = chunk.head(1)
            proto = head if proto is None else pd.concat([proto, head], ignore_index=True)
            proto = proto.tail(1) if len(proto) else proto
    except InvalidInput:
        raise
    except (ValueError, OverflowError) as exc:
        # pandas' EmptyDataError and ParserError, and UnicodeDecodeError, are ValueErrors.
        raise InvalidInput(f"file is not valid {what}: {exc}") from exc
    finally:
        chunks.close()  # closes the file now, also when parsing failed half-way
    if proto is None or not len(proto.columns):
        raise InvalidInput(f"file is not valid {what}: it has no columns")
    columns = [Column(name=str(c), dtype=str(t)) for c, t in proto.dtypes.items()]
    return DatasetSchema(columns=columns, rows=rows)


def _parquet(path: Path) -> DatasetSchema:
    """From the footer only: row count and the pandas dtypes of an empty table."""
    try:
        pf = pq.ParquetFile(path)
        rows = pf.metadata.num_rows
        arrow = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"file is not valid Parquet: {exc}") from exc
    try:
        dtypes = arrow.empty_table().to_pandas().dtypes
        columns = [Column(name=str(c), dtype=str(t)) for c, t in dtypes.items()]
    except (pa.ArrowException, ValueError, TypeError):  # types pandas cannot hold
        columns = [Column(name=f.name, dtype=str(f.type)) for f in arrow]
    if not columns:
        raise InvalidInput("file is not valid Parquet: it has no columns")
    return DatasetSchema(columns=columns, rows=int(rows))


# -- arrays --------------------------------------------------------------------
def _dtype_name(dt: np.dtype[np.generic]) -> str:
    return dt.name if dt.kind in "biufc?" else str(dt)


def _npz(path: Path, max_unpacked_bytes: int, max_members: int) -> DatasetSchema:
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head == b"\x93NUMPY":
        raise InvalidInput("file is not valid NPZ: it is a single .npy array, not an .npz archive")
    if not zipfile.is_zipfile(path):
        raise InvalidInput("file is not valid NPZ: it is not a zip archive of .npy arrays")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"file is not valid NPZ: {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InvalidInput("file is not valid NPZ: it is a single .npy array, not an .npz archive")
    try:
        with npz:
            zf = npz.zip
            if zf is None:  # np.load always opens one; keeps the type checker honest
                raise InvalidInput("file is not valid NPZ: it is not a zip archive")
            infos = zf.infolist()
            if len(infos) > max_members:
                raise InvalidInput(f"file is not valid NPZ: more than {max_members} arrays")
            if sum(i.file_size for i in infos) > max_unpacked_bytes:
                raise InvalidInput(f"NPZ arrays unpack to more than {max_unpacked_bytes} bytes")
            columns = [_npy_member(zf, info) for info in infos]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"file is not valid NPZ: {exc}") from exc
    if not columns:
        raise InvalidInput("file is not valid NPZ: it holds no arrays")
    firsts = {c.shape[0] if c.shape else None for c in columns}
    rows = firsts.pop() if len(firsts) == 1 else None
    return DatasetSchema(columns=columns, rows=rows)


def _npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Column:
    """Read the array's header (never its data as objects) and check its bytes are whole."""
    name = info.filename
    if not name.endswith(".npy") or info.is_dir():
        raise InvalidInput(f"file is not valid NPZ: member {name!r} is not a .npy array")
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        reader = _NPY_READERS.get(version)
        if reader is None:
            raise InvalidInput(f"array {name!r}: unsupported .npy format version {version}")
        shape, _fortran, dtype = reader(fh)
        if dtype.hasobject:
            raise InvalidInput(
                f"array {name[:-4]!r} holds Python objects (dtype {dtype}), which would need "
                "unpickling; store numbers or fixed-width strings"
            )
        expected = fh.tell() + math.prod(shape) * dtype.itemsize
        if info.file_size != expected:
            raise InvalidInput(
                f"array {name!r} is truncated or padded: {info.file_size} bytes, "
                f"expected {expected}"
            )
        while fh.read(1024 * 1024):  # reading to the end checks the CRC
            pass
    return Column(name=name[:-4], dtype=_dtype_name(dtype), shape=[int(d) for d in shape])


# -- images --------------------------------------------------------------------
def _images(path: Path, max_unpacked_bytes: int, max_members: int) -> DatasetSchema:
    if not zipfile.is_zipfile(path):
        raise InvalidInput("file is not a zip archive (of <class>/<image> files)")
    inspect_archive(path, "zip", max_unpacked_bytes, max_members)  # traversal, links, bombs
    try:
        with zipfile.ZipFile(path) as zf:
            found, skipped = images.entries(zf)
            if not found:
                raise InvalidInput(
                    "archive holds no images (expected <class>/<image> with one of "
                    f"{', '.join(sorted(images.SUFFIXES))})"
                )
            classes = Counter(e.label for e in found)
            sizes: set[tuple[int, ...] | None] = set()  # (h, w)
            modes: set[str | None] = set()
            for entry in _sample(found):
                shape, mode = images.probe(images.read_member(zf, entry), entry.member)
                sizes.add(tuple(shape[:2]) if shape else None)
                modes.add(mode)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InvalidInput(f"file is not a valid zip archive: {exc}") from exc
    # A colour image among grey ones makes the whole set RGB (as the loader converts it).
    mode = None if None in modes else ("RGB" if "RGB" in modes else "L")
    size = sizes.pop() if len(sizes) == 1 else None
    shape = [*size, 1 if mode == "L" else 3] if size and mode else None
    return DatasetSchema(
        columns=[
            Column(name="image", dtype="uint8", shape=shape),
            Column(name="label", dtype="str"),
        ],
        rows=len(found),
        extra={
            "classes": dict(sorted(classes.items())),
            "shape": shape,
            "mode": mode,
            "skipped_files": skipped,
        },
    )


def _sample(found: list[images.Entry]) -> list[images.Entry]:
    """The first few images of each class, at most ``IMAGE_SAMPLES`` in all."""
    per: Counter[str] = Counter()
    out: list[images.Entry] = []
    for e in found:
        if per[e.label] < IMAGE_SAMPLES_PER_CLASS:
            per[e.label] += 1
            out.append(e)
            if len(out) >= IMAGE_SAMPLES:
                break
    return out
