"""Artifact inspection: formats are checked and ONNX signatures inferred, in files and archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

import pytest

from modelplane.errors import InvalidInput
from modelplane.examples import double_onnx
from modelplane.registry.inspect import check_format, inspect_artifact
from modelplane.schemas.registry import FORMATS, Signature, TensorSpec
from modelplane.storage.archives import inspect_archive

TarMode = Literal["w", "w:gz"]

DOUBLE = Signature(
    inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 4])],
    outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 4])],
)


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_tar(path: Path, files: dict[str, bytes], mode: TarMode = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def inspect(fmt: str, packaging: str, path: Path) -> Signature | None:
    """What the upload path does: check the archive first, then the artifact."""
    archive = None if packaging == "file" else inspect_archive(path, packaging, 10**9, 1000)
    return inspect_artifact(fmt, packaging, path, archive)


def pack(tmp_path: Path, kind: str, files: dict[str, bytes]) -> tuple[str, Path]:
    """``kind`` is tar, tar.gz or zip; returns (packaging, path)."""
    if kind == "zip":
        return "zip", write_zip(tmp_path / "a.zip", files)
    mode: TarMode = "w:gz" if kind == "tar.gz" else "w"
    return "tar", write_tar(tmp_path / f"a.{kind}", files, mode)


ARCHIVES = ["tar", "tar.gz", "zip"]


# -- ONNX ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["onnx", "sklearn_onnx"])
def test_onnx_file_signature_is_inferred(tmp_path: Path, onnx_bytes: bytes, fmt: str) -> None:
    path = write_file(tmp_path / "model.onnx", onnx_bytes)
    assert inspect(fmt, "file", path) == DOUBLE


def test_signature_follows_the_model(tmp_path: Path) -> None:
    path = write_file(tmp_path / "model.onnx", double_onnx(width=8))
    signature = inspect("onnx", "file", path)
    assert signature is not None
    assert [(s.name, s.shape) for s in signature.inputs + signature.outputs] == [
        ("x", [-1, 8]),
        ("y", [-1, 8]),
    ]


@pytest.mark.parametrize(
    "data",
    [b"this is not an onnx model", b"", b"\x08\x07", double_onnx()[:40]],
    ids=["text", "empty", "header-only", "truncated"],
)
def test_garbage_is_not_a_valid_onnx_model(tmp_path: Path, data: bytes) -> None:
    path = write_file(tmp_path / "model.onnx", data)
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        inspect("onnx", "file", path)


@pytest.mark.parametrize("kind", ARCHIVES)
def test_onnx_inside_an_archive(tmp_path: Path, onnx_bytes: bytes, kind: str) -> None:
    packaging, path = pack(tmp_path, kind, {"model.onnx": onnx_bytes, "README.md": b"hi"})
    assert inspect("onnx", packaging, path) == DOUBLE


@pytest.mark.parametrize("kind", ARCHIVES)
def test_model_onnx_is_preferred_over_other_onnx_files(
    tmp_path: Path, onnx_bytes: bytes, kind: str
) -> None:
    files = {"a-aux.onnx": b"not a model", "weights/model.onnx": onnx_bytes}
    packaging, path = pack(tmp_path, kind, files)
    assert inspect("onnx", packaging, path) == DOUBLE


def test_tar_made_from_a_directory_with_dot_prefix(tmp_path: Path, onnx_bytes: bytes) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(onnx_bytes)
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(folder, arcname=".")  # members are "./model.onnx", as `tar -C model .` makes
    assert inspect("onnx", "tar", path) == DOUBLE


@pytest.mark.parametrize("kind", ARCHIVES)
def test_archive_without_onnx_file_is_refused(tmp_path: Path, kind: str) -> None:
    packaging, path = pack(tmp_path, kind, {"model.bin": b"weights"})
    with pytest.raises(InvalidInput, match=r"no \.onnx file"):
        inspect("onnx", packaging, path)


@pytest.mark.parametrize("kind", ARCHIVES)
def test_invalid_onnx_inside_an_archive_is_refused(tmp_path: Path, kind: str) -> None:
    packaging, path = pack(tmp_path, kind, {"model.onnx": b"not a model"})
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        inspect("onnx", packaging, path)


def test_onnx_in_a_hidden_folder_of_a_tar(tmp_path: Path, onnx_bytes: bytes) -> None:
    path = write_tar(tmp_path / "a.tar", {".cache/model.onnx": onnx_bytes})
    assert inspect("onnx", "tar", path) == DOUBLE


def test_onnx_with_dot_prefix_in_a_zip(tmp_path: Path, onnx_bytes: bytes) -> None:
    path = write_zip(tmp_path / "a.zip", {"./model.onnx": onnx_bytes})
    assert inspect("onnx", "zip", path) == DOUBLE


# -- other formats -------------------------------------------------------------


def test_transformers_needs_an_archive(tmp_path: Path) -> None:
    path = write_file(tmp_path / "config.json", b"{}")
    with pytest.raises(InvalidInput, match="needs a directory"):
        inspect("transformers", "file", path)


@pytest.mark.parametrize("kind", ARCHIVES)
def test_transformers_archive_needs_config_json(tmp_path: Path, kind: str) -> None:
    packaging, path = pack(tmp_path, kind, {"model.safetensors": b"w", "tokenizer.json": b"{}"})
    with pytest.raises(InvalidInput, match=r"no config\.json"):
        inspect("transformers", packaging, path)


@pytest.mark.parametrize("kind", ARCHIVES)
def test_transformers_archive_with_config_json_passes(tmp_path: Path, kind: str) -> None:
    files = {"bert/config.json": b"{}", "bert/model.safetensors": b"w"}
    packaging, path = pack(tmp_path, kind, files)
    assert inspect("transformers", packaging, path) is None


@pytest.mark.parametrize("fmt", ["skops", "torchscript", "torch_export"])
def test_single_file_formats_must_be_zip_containers(tmp_path: Path, fmt: str) -> None:
    path = write_file(tmp_path / "model.bin", b"pickle bytes, not a zip")
    with pytest.raises(InvalidInput, match="not a zip container"):
        inspect(fmt, "file", path)


@pytest.mark.parametrize("fmt", ["skops", "torchscript", "torch_export"])
def test_single_file_formats_accept_a_zip_container(tmp_path: Path, fmt: str) -> None:
    path = write_zip(tmp_path / "model.pt", {"archive/data.pkl": b"x"})
    assert inspect(fmt, "file", path) is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_known_formats_pass_the_format_check(fmt: str) -> None:
    assert check_format(fmt) == fmt


@pytest.mark.parametrize("fmt", ["keras", "ONNX", ""])
def test_unknown_format_is_refused_listing_the_known_ones(fmt: str) -> None:
    with pytest.raises(InvalidInput, match="expected one of onnx"):
        check_format(fmt)
