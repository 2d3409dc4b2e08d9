"""Schema inference and loading of every dataset format, and refusal of what does not parse."""

from __future__ import annotations

import io
import os
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from modelplane.datasets import format_from_filename, infer_schema, load_dataset
from modelplane.datasets import images as image_io
from modelplane.datasets.loader import ImageData
from modelplane.errors import InvalidInput
from modelplane.schemas.datasets import DatasetSchema
from tests.datasets.files import (
    IRIS_DTYPES,
    digits,
    image_bytes,
    iris,
    write_digits_npz,
    write_digits_zip,
    write_iris,
    zip_of,
)

BIG = 10 * 1024**3


def infer(path: Path, fmt: str) -> DatasetSchema:
    return infer_schema(path, fmt, BIG, 100_000)


def refused(path: Path, fmt: str) -> str:
    with pytest.raises(InvalidInput) as info:
        infer(path, fmt)
    return info.value.message


def dtypes(schema: DatasetSchema) -> dict[str, str]:
    return {c.name: c.dtype for c in schema.columns}


@pytest.fixture
def no_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_io, "pillow", lambda: None)


# -- tables ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_iris_table_schema_and_round_trip(tmp_path: Path, fmt: str) -> None:
    path = write_iris(tmp_path / f"iris.{fmt}", fmt)
    schema = infer(path, fmt)
    assert schema.rows == 150
    assert dtypes(schema) == IRIS_DTYPES
    assert [c.name for c in schema.columns] == list(IRIS_DTYPES)
    loaded = load_dataset(path, fmt)
    assert isinstance(loaded, pd.DataFrame)
    pd.testing.assert_frame_equal(loaded, iris())
    assert {str(k): str(v) for k, v in loaded.dtypes.items()} == dtypes(schema)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_are_counted_and_dtypes_merged_across_chunks(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelplane.datasets import schema as schema_mod

    monkeypatch.setattr(schema_mod, "CHUNK_ROWS", 2)
    # "n" looks like integers until the last chunk, which makes it float.
    rows = [("1", "a"), ("2", "b"), ("3", "c"), ("4", "d"), ("2.5", "e")]
    path = tmp_path / f"f.{fmt}"
    if fmt == "csv":
        path.write_text("n,s\n" + "".join(f"{n},{s}\n" for n, s in rows))
    else:
        path.write_text("".join(f'{{"n": {n}, "s": "{s}"}}\n' for n, s in rows))
    schema = infer(path, fmt)
    assert schema.rows == 5
    assert dtypes(schema) == {"n": "float64", "s": "str"}


def test_jsonl_rows_with_different_keys_union_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2, "b": "x"}\n{"a": 3, "c": {"nested": true}}\n')
    schema = infer(path, "jsonl")
    assert schema.rows == 3
    assert dtypes(schema) == {"a": "int64", "b": "str", "c": "object"}


def test_csv_with_only_a_header_has_zero_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n")
    schema = infer(path, "csv")
    assert schema.rows == 0
    assert [c.name for c in schema.columns] == ["a", "b"]


def test_parquet_is_read_from_its_footer_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_iris(tmp_path / "iris.parquet", "parquet")

    def no_full_read(*_: Any, **__: Any) -> None:
        raise AssertionError("read the whole table")

    monkeypatch.setattr(pd, "read_parquet", no_full_read)
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq.ParquetFile, "read", no_full_read)
    monkeypatch.setattr(pq, "read_table", no_full_read)
    assert infer(path, "parquet").rows == 150


def test_parquet_pandas_index_is_not_a_column(tmp_path: Path) -> None:
    path = tmp_path / "idx.parquet"
    pd.DataFrame({"a": [1, 2]}, index=pd.Index(["x", "y"], name="key")).to_parquet(path)
    assert dtypes(infer(path, "parquet")) == {"a": "int64"}


# -- arrays ----------------------------------------------------------------------
def test_digits_npz_schema_and_round_trip(tmp_path: Path) -> None:
    path = write_digits_npz(tmp_path / "digits.npz")
    schema = infer(path, "npz")
    shapes = {c.name: (c.dtype, c.shape) for c in schema.columns}
    assert shapes == {
        "X": ("float64", [1797, 64]),
        "images": ("float64", [1797, 8, 8]),
        "y": ("int64", [1797]),
    }
    assert schema.rows == 1797
    loaded = load_dataset(path, "npz")
    assert isinstance(loaded, dict)
    bunch = load_digits()
    np.testing.assert_array_equal(loaded["images"], bunch.images)
    np.testing.assert_array_equal(loaded["y"], bunch.target)


def test_npz_rows_are_unknown_when_arrays_disagree(tmp_path: Path) -> None:
    path = tmp_path / "mixed.npz"
    np.savez(path, a=np.zeros(3), b=np.zeros((4, 2)), s=np.array(["x", "yy"]))
    schema = infer(path, "npz")
    assert schema.rows is None
    assert {c.name: c.dtype for c in schema.columns} == {"a": "float64", "b": "float64", "s": "<U2"}


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_pickled_object_array_in_npz_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.savez(path, x=np.arange(3), evil=payload)
    # The payload is live: unpickling it does run code.
    pickle.loads(pickle.dumps(_Payload(tmp_path / "control")))
    assert (tmp_path / "control").exists()

    message = refused(path, "npz")
    assert "'evil' holds Python objects" in message
    with pytest.raises(ValueError, match="allow_pickle"):
        load_dataset(path, "npz")
    assert not marker.exists()


def test_pickle_file_declared_as_npz_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    assert "not a zip archive" in refused(path, "npz")
    assert not marker.exists()


# -- images ----------------------------------------------------------------------
def _expected_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits in the loader's order: by class, then by file name (the index)."""
    pixels, labels = digits(n)
    order = np.lexsort((np.arange(n), labels))
    return pixels[order][..., None], labels[order]


@pytest.mark.parametrize("ext", ["png", "pgm"])
def test_digits_image_folder_schema_and_round_trip(tmp_path: Path, ext: str) -> None:
    path = write_digits_zip(tmp_path / "digits.zip", ext, n=200)
    schema = infer(path, "images")
    _, labels = digits(200)
    assert schema.rows == 200
    assert schema.extra["classes"] == {str(d): int(c) for d, c in enumerate(np.bincount(labels))}
    assert schema.extra["shape"] == [8, 8, 1]
    assert schema.extra["mode"] == "L"
    assert schema.extra["skipped_files"] == 1  # the README
    assert [(c.name, c.dtype, c.shape) for c in schema.columns] == [
        ("image", "uint8", [8, 8, 1]),
        ("label", "str", None),
    ]
    data = load_dataset(path, "images")
    assert isinstance(data, ImageData)
    pixels, ordered = _expected_digits(200)
    assert data.X.dtype == np.uint8
    np.testing.assert_array_equal(data.X, pixels)
    np.testing.assert_array_equal(data.y, ordered)
    assert data.classes == [str(d) for d in range(10)]
    scaled = load_dataset(path, "images", scale=True)
    assert isinstance(scaled, ImageData)
    assert scaled.X.dtype == np.float32
    assert float(scaled.X.max()) == pytest.approx(240 / 255)


def test_images_without_a_wrapping_folder_use_the_top_folder_as_class(tmp_path: Path) -> None:
    bare = infer(write_digits_zip(tmp_path / "bare.zip", "png", n=60, top=""), "images")
    wrapped = infer(write_digits_zip(tmp_path / "wrapped.zip", "png", n=60), "images")
    assert bare.extra["classes"] == wrapped.extra["classes"]
    assert set(bare.extra["classes"]) == {str(d) for d in range(10)}
    one_class = zip_of(
        tmp_path / "one.zip",
        {"cat/1.png": image_bytes(np.zeros((4, 6), np.uint8), "png")},
    )
    schema = infer(one_class, "images")
    assert schema.extra["classes"] == {"cat": 1}
    assert schema.extra["shape"] == [4, 6, 1]


def test_colour_images_are_rgb_and_grey_ones_join_them(tmp_path: Path) -> None:
    rgb = np.zeros((5, 5, 3), np.uint8)
    rgb[..., 0] = 200
    path = zip_of(
        tmp_path / "c.zip",
        {
            "red/a.png": image_bytes(rgb, "png"),
            "grey/b.png": image_bytes(np.full((5, 5), 7, np.uint8), "png"),
        },
    )
    schema = infer(path, "images")
    assert schema.extra["mode"] == "RGB"
    assert schema.extra["shape"] == [5, 5, 3]
    data = load_dataset(path, "images")
    assert isinstance(data, ImageData)
    assert data.X.shape == (2, 5, 5, 3)
    assert data.classes == ["grey", "red"]
    np.testing.assert_array_equal(data.X[0], np.full((5, 5, 3), 7, np.uint8))
    np.testing.assert_array_equal(data.X[1], rgb)


def test_images_of_different_sizes_need_an_image_size(tmp_path: Path) -> None:
    path = zip_of(
        tmp_path / "s.zip",
        {
            "a/1.png": image_bytes(np.zeros((4, 4), np.uint8), "png"),
            "b/2.png": image_bytes(np.zeros((6, 3), np.uint8), "png"),
        },
    )
    assert infer(path, "images").extra["shape"] is None
    with pytest.raises(InvalidInput, match="differ in size"):
        load_dataset(path, "images")
    data = load_dataset(path, "images", image_size=(8, 8))
    assert isinstance(data, ImageData)
    assert data.X.shape == (2, 8, 8, 1)


def test_without_pillow_images_are_checked_by_magic_bytes(tmp_path: Path, no_pillow: None) -> None:
    png = write_digits_zip(tmp_path / "png.zip", "png", n=40)
    schema = infer(png, "images")
    assert schema.rows == 40
    assert schema.extra["shape"] == [8, 8, 1]  # from the PNG header
    with pytest.raises(InvalidInput, match="install Pillow"):
        load_dataset(png, "images")
    pgm = write_digits_zip(tmp_path / "pgm.zip", "pgm", n=40)
    data = load_dataset(pgm, "images")  # binary PGM decodes without Pillow
    assert isinstance(data, ImageData)
    np.testing.assert_array_equal(data.X, _expected_digits(40)[0])
    garbage = zip_of(tmp_path / "bad.zip", {"a/1.png": b"not an image at all"})
    assert "does not decode" in refused(garbage, "images")


# -- refusals ----------------------------------------------------------------------
def _parquet_bytes(tmp_path: Path) -> bytes:
    return write_iris(tmp_path / "p.parquet", "parquet").read_bytes()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"a,b\n1,2\n3,4,5\n", "Expected 2 fields in line 3"),
        (b"", "No columns to parse"),
        (b"a,b\n\xff\xfe\x00,1\n", "utf-8"),
    ],
)
def test_malformed_csv_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    message = refused(path, "csv")
    assert message.startswith("file is not valid CSV")
    assert reason in message


def test_parquet_bytes_are_not_csv(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(_parquet_bytes(tmp_path))
    assert refused(path, "csv").startswith("file is not valid CSV")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"a": 1}\n{"a": \n', "line 2"),
        (b'{"a": 1}\n[1, 2]\n', "line 2 is a JSON list, not an object"),
        (b"5\n", "line 1 is a JSON int"),
        (b"", "no columns"),
        (b"\n\n", "no columns"),
    ],
)
def test_malformed_jsonl_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    message = refused(path, "jsonl")
    assert message.startswith("file is not valid JSONL")
    assert reason in message


def test_overlong_jsonl_line_is_refused_without_reading_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelplane.datasets import schema as schema_mod

    monkeypatch.setattr(schema_mod, "MAX_LINE_BYTES", 20)
    path = tmp_path / "long.jsonl"
    path.write_text('{"a": 1}\n{"a": "' + "x" * 100 + '"}\n')
    assert "line 2 is longer than 20 bytes" in refused(path, "jsonl")


def test_malformed_parquet_is_refused(tmp_path: Path) -> None:
    csv = write_iris(tmp_path / "iris.csv", "csv")
    assert "magic bytes" in refused(csv, "parquet")
    whole = _parquet_bytes(tmp_path)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole[: len(whole) // 2])
    assert refused(cut, "parquet").startswith("file is not valid Parquet")


def test_malformed_npz_is_refused(tmp_path: Path) -> None:
    csv = write_iris(tmp_path / "iris.csv", "csv")
    assert "not a zip archive" in refused(csv, "npz")

    npy = tmp_path / "one.npy"
    np.save(npy, np.arange(3))
    assert "single .npy array" in refused(npy, "npz")

    stray = zip_of(tmp_path / "stray.npz", {"notes.txt": b"hello"})
    assert "member 'notes.txt' is not a .npy array" in refused(stray, "npz")

    whole = write_digits_npz(tmp_path / "digits.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole[: len(whole) // 2])
    assert refused(cut, "npz").startswith("file is not valid NPZ")

    buf = io.BytesIO()
    np.save(buf, np.arange(100, dtype=np.int64))
    short = zip_of(tmp_path / "short.npz", {"a.npy": buf.getvalue()[:-16]})
    assert "truncated" in refused(short, "npz")

    empty = zip_of(tmp_path / "empty.npz", {})
    assert refused(empty, "npz").startswith("file is not valid NPZ")


def test_npz_bigger_than_the_unpacked_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, z=np.zeros(1_000_000))
    with pytest.raises(InvalidInput, match="unpack to more than"):
        infer_schema(path, "npz", 1000, 100)


def test_malformed_image_archives_are_refused(tmp_path: Path) -> None:
    png = image_bytes(np.zeros((4, 4), np.uint8), "png")
    csv = write_iris(tmp_path / "iris.csv", "csv")
    assert "not a zip archive" in refused(csv, "images")
    no_images = zip_of(tmp_path / "n.zip", {"a/readme.txt": b"x"})
    assert "holds no images" in refused(no_images, "images")
    loose = zip_of(tmp_path / "l.zip", {"cat/1.png": png, "2.png": png})
    assert "'2.png' is not in a class folder" in refused(loose, "images")
    corrupt = zip_of(tmp_path / "c.zip", {"cat/1.png": png[:30]})
    assert "image 'cat/1.png' does not decode" in refused(corrupt, "images")


def test_image_archive_with_path_traversal_is_refused(tmp_path: Path) -> None:
    png = image_bytes(np.zeros((4, 4), np.uint8), "png")
    evil = zip_of(tmp_path / "t.zip", {"cat/1.png": png, "../../etc/cat/2.png": png})
    assert "escapes" in refused(evil, "images")
    absolute = zip_of(tmp_path / "a.zip", {"/cat/1.png": png})
    assert "escapes" in refused(absolute, "images")


def test_image_archive_with_a_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cat/1.png", image_bytes(np.zeros((4, 4), np.uint8), "png"))
        link = zipfile.ZipInfo("cat/2.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert "symbolic link" in refused(path, "images")


def test_decompression_bomb_image_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = zip_of(tmp_path / "b.zip", {"a/1.png": image_bytes(np.zeros((20, 20), np.uint8), "png")})
    assert "does not decode" in refused(path, "images")


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = write_iris(tmp_path / "iris.csv", "csv")
    with pytest.raises(InvalidInput, match="unknown dataset format 'xls'"):
        infer(path, "xls")
    with pytest.raises(InvalidInput, match="unknown dataset format"):
        load_dataset(path, "xls")


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("a.csv", "csv"),
        ("A.CSV", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.npz", "npz"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("digits.zip", "images"),
    ],
)
def test_format_from_filename(filename: str, fmt: str) -> None:
    assert format_from_filename(filename) == fmt


@pytest.mark.parametrize("filename", ["data.txt", "data", "a.csv.gz", ""])
def test_format_from_an_unknown_extension_is_refused(filename: str) -> None:
    with pytest.raises(InvalidInput, match="send 'format'"):
        format_from_filename(filename)
