"""``modelplane datasets …`` against a live server (CliRunner, in process)."""

from __future__ import annotations

from pathlib import Path

from modelplane.errors import Conflict, InvalidInput, NotFound
from tests.cli.test_cli import flat, invoke, js, ok
from tests.conftest import LiveServer
from tests.datasets.files import IRIS_DTYPES, write_digits_folder, write_digits_zip, write_iris


def test_upload_list_show_download_delete(server: LiveServer, tmp_path: Path) -> None:
    csv = write_iris(tmp_path / "iris.csv", "csv")
    out = ok(server, "datasets", "upload", str(csv), "--name", "iris", "--description", "flowers")
    assert flat(out).startswith("uploaded dataset iris (csv, 150 rows, sha256 ")

    made = js(
        server, "datasets", "upload", str(write_digits_zip(tmp_path / "d.zip")), "-n", "digits"
    )
    assert made["format"] == "images"
    assert made["schema"]["rows"] == 200

    listed = js(server, "datasets", "list")
    assert [d["name"] for d in listed] == ["digits", "iris"]
    table = ok(server, "datasets", "list")
    assert "iris" in table and "digits" in table and "flowers" in table
    assert [d["name"] for d in js(server, "datasets", "list", "--prefix", "ir")] == ["iris"]

    shown = js(server, "datasets", "show", "iris")
    assert {c["name"]: c["dtype"] for c in shown["schema"]["columns"]} == IRIS_DTYPES
    text = flat(ok(server, "datasets", "show", "iris"))
    for column, dtype in IRIS_DTYPES.items():
        assert column in text and dtype in text
    assert "150" in text
    digits = flat(ok(server, "datasets", "show", "digits"))
    assert "classes" in digits and "[8, 8, 1]" in digits

    dest = tmp_path / "down"
    dest.mkdir()
    saved = ok(server, "datasets", "download", "iris", "-o", str(dest))
    assert flat(saved) == f"saved {dest / 'iris.csv'}"
    assert (dest / "iris.csv").read_bytes() == csv.read_bytes()

    assert ok(server, "datasets", "delete", "iris", "-y").strip() == "deleted dataset iris"
    result = invoke(server, "datasets", "show", "iris")
    assert result.exit_code != 0
    assert isinstance(result.exception, NotFound)


def test_upload_with_explicit_format_and_tags(server: LiveServer, tmp_path: Path) -> None:
    path = write_iris(tmp_path / "iris.data", "jsonl")
    made = js(
        server, "datasets", "upload", str(path), "-n", "iris", "-f", "jsonl", "--tag", "src=sk"
    )
    assert made["format"] == "jsonl"
    assert made["tags"] == {"src": "sk"}
    assert made["schema"]["rows"] == 150


def test_upload_a_folder_of_images(server: LiveServer, tmp_path: Path) -> None:
    folder = write_digits_folder(tmp_path / "digits", n=30)
    made = js(server, "datasets", "upload", str(folder), "--name", "digits")
    assert made["format"] == "images"
    assert sum(made["schema"]["extra"]["classes"].values()) == 30


def test_errors_come_back_from_the_server(server: LiveServer, tmp_path: Path) -> None:
    csv = write_iris(tmp_path / "iris.csv", "csv")
    ok(server, "datasets", "upload", str(csv), "--name", "iris")
    dup = invoke(server, "datasets", "upload", str(csv), "--name", "iris")
    assert isinstance(dup.exception, Conflict)
    bad = invoke(server, "datasets", "upload", str(csv), "--name", "x", "-f", "parquet")
    assert isinstance(bad.exception, InvalidInput)
    assert "file is not valid Parquet" in bad.exception.message
    missing = invoke(server, "datasets", "upload", str(tmp_path / "nope.csv"), "--name", "x")
    assert missing.exit_code == 2  # typer: the path does not exist
    refused = invoke(server, "datasets", "delete", "iris", input="n\n")
    assert refused.exit_code != 0
    assert [d["name"] for d in js(server, "datasets", "list")] == ["iris"]
