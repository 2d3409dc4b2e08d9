"""Datasets over HTTP against a real server: upload, list, show, download, delete, errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelplane.client import Client
from modelplane.datasets import DatasetService, NewDataset
from modelplane.errors import Conflict, InvalidInput, NotFound
from modelplane.schemas.datasets import DatasetSchema
from modelplane.settings import Settings
from tests.api.conftest import api_client, blob_files, multipart, tmp_files
from tests.conftest import LiveServer
from tests.datasets.files import (
    IRIS_DTYPES,
    write_digits_folder,
    write_digits_npz,
    write_digits_zip,
    write_iris,
)


def post(
    api: httpx.Client, path: Path, name: str, filename: str | None = None, **fields: str
) -> httpx.Response:
    return api.post(
        "/datasets",
        data={"name": name, **fields},
        files={"file": (filename or path.name, path.read_bytes(), "application/octet-stream")},
    )


def created(api: httpx.Client, path: Path, name: str, **fields: str) -> dict[str, Any]:
    r = post(api, path, name, **fields)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def service(server: LiveServer) -> DatasetService:
    svc: DatasetService = server.app.app.state.datasets
    return svc


@pytest.fixture
def iris_csv(tmp_path: Path) -> Path:
    return write_iris(tmp_path / "iris.csv", "csv")


# -- upload each format -----------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_upload_table_formats(api: httpx.Client, tmp_path: Path, fmt: str) -> None:
    path = write_iris(tmp_path / f"iris.{fmt}", fmt)
    body = created(api, path, f"iris-{fmt}", description="Fisher's iris")
    assert body["name"] == f"iris-{fmt}"
    assert body["format"] == fmt  # from the extension
    assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert body["size"] == path.stat().st_size
    assert body["description"] == "Fisher's iris"
    assert body["created_by"] == "anonymous"
    assert body["schema"]["rows"] == 150
    assert {c["name"]: c["dtype"] for c in body["schema"]["columns"]} == IRIS_DTYPES


def test_upload_npz(api: httpx.Client, tmp_path: Path) -> None:
    body = created(api, write_digits_npz(tmp_path / "digits.npz"), "digits")
    assert body["format"] == "npz"
    assert body["schema"]["rows"] == 1797
    assert {c["name"]: c["shape"] for c in body["schema"]["columns"]} == {
        "X": [1797, 64],
        "images": [1797, 8, 8],
        "y": [1797],
    }


def test_upload_zipped_image_folder(api: httpx.Client, tmp_path: Path) -> None:
    body = created(api, write_digits_zip(tmp_path / "digits.zip", "png", n=100), "digit-images")
    assert body["format"] == "images"
    assert body["schema"]["rows"] == 100
    assert sum(body["schema"]["extra"]["classes"].values()) == 100
    assert body["schema"]["extra"]["shape"] == [8, 8, 1]


def test_explicit_format_overrides_the_extension(api: httpx.Client, tmp_path: Path) -> None:
    path = write_iris(tmp_path / "iris.txt", "csv")
    body = created(api, path, "iris", format="csv", tags=json.dumps({"source": "sklearn"}))
    assert body["format"] == "csv"
    assert body["tags"] == {"source": "sklearn"}


# -- list, show, download -----------------------------------------------------------
def test_list_is_paginated_and_filtered(api: httpx.Client, iris_csv: Path) -> None:
    for name in ["c", "a", "b-1", "b-2"]:
        created(api, iris_csv, name)
    names: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        r = api.get("/datasets", params=params)
        assert r.status_code == 200, r.text
        names += [d["name"] for d in r.json()["datasets"]]
        if not r.json()["next_page_token"]:
            break
        params["page_token"] = r.json()["next_page_token"]
    assert names == ["a", "b-1", "b-2", "c"]
    r = api.get("/datasets", params={"prefix": "b-"})
    assert [d["name"] for d in r.json()["datasets"]] == ["b-1", "b-2"]
    assert api.get("/datasets", params={"page_token": "@@"}).status_code == 400
    assert api.get("/datasets", params={"limit": 0}).status_code == 422


def test_show_and_download_round_trip_with_etag_and_range(
    api: httpx.Client, tmp_path: Path
) -> None:
    path = write_digits_zip(tmp_path / "digits.zip", "png", n=50)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    made = created(api, path, "digits")
    assert api.get("/datasets/digits").json() == made

    r = api.get("/datasets/digits/download")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["etag"] == f'"{digest}"'
    assert 'filename="digits.zip"' in r.headers["content-disposition"]

    r = api.get("/datasets/digits/download", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"

    r = api.get("/datasets/digits/download", headers={"If-None-Match": f'"{digest}"'})
    assert r.status_code == 304
    assert r.content == b""


# -- errors -------------------------------------------------------------------------
def test_duplicate_name_is_409_and_stores_nothing(
    api: httpx.Client, settings: Settings, tmp_path: Path, iris_csv: Path
) -> None:
    created(api, iris_csv, "iris")
    blobs = blob_files(settings)
    other = write_iris(tmp_path / "iris.parquet", "parquet")
    r = post(api, other, "iris")
    assert r.status_code == 409
    assert r.json() == {"error": "dataset 'iris' already exists"}
    assert blob_files(settings) == blobs
    assert tmp_files(settings) == []


@pytest.mark.parametrize(
    ("fields", "filename", "content", "message"),
    [
        ({"name": "Bad Name"}, "a.csv", b"a\n1\n", "invalid dataset name 'Bad Name'"),
        ({"name": "../etc"}, "a.csv", b"a\n1\n", "invalid dataset name"),
        ({"name": "x", "format": "xls"}, "a.csv", b"a\n1\n", "unknown dataset format 'xls'"),
        ({"name": "x"}, "a.txt", b"a\n1\n", "cannot tell the format of 'a.txt'"),
        ({"name": "x"}, "a.csv", b"a,b\n1,2\n3,4,5\n", "file is not valid CSV"),
        ({"name": "x"}, "a.parquet", b"a,b\n1,2\n", "file is not valid Parquet"),
        ({"name": "x"}, "a.jsonl", b'{"a": 1}\n[1]\n', "line 2 is a JSON list"),
        ({"name": "x"}, "a.npz", b"a,b\n1,2\n", "file is not valid NPZ"),
        ({"name": "x"}, "a.zip", b"a,b\n1,2\n", "not a zip archive"),
        ({}, "a.csv", b"a\n1\n", "name: Field required"),
        ({"name": "x", "colour": "red"}, "a.csv", b"a\n1\n", "colour: Extra inputs"),
        ({"name": "x", "tags": '{"bad key!": "v"}'}, "a.csv", b"a\n1\n", "invalid tag key"),
    ],
)
def test_invalid_uploads_are_422_and_store_nothing(
    api: httpx.Client,
    settings: Settings,
    fields: dict[str, str],
    filename: str,
    content: bytes,
    message: str,
) -> None:
    r = api.post(
        "/datasets", data=fields, files={"file": (filename, content, "application/octet-stream")}
    )
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]
    assert blob_files(settings) == set()
    assert tmp_files(settings) == []
    assert api.get("/datasets").json()["datasets"] == []


def test_pickled_npz_is_422(api: httpx.Client, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, evil=np.array([{"a": 1}], dtype=object))
    r = post(api, path, "evil")
    assert r.status_code == 422
    assert "holds Python objects" in r.json()["error"]
    assert blob_files(settings) == set()


def test_missing_file_part_is_422_and_bad_tags_json_400(api: httpx.Client) -> None:
    body, headers = multipart({"name": "x"})
    r = api.post("/datasets", content=body, headers=headers)
    assert r.status_code == 422
    assert "multipart part named 'file'" in r.json()["error"]
    r = api.post(
        "/datasets",
        data={"name": "x", "tags": "{"},
        files={"file": ("a.csv", b"a\n1\n", "text/csv")},
    )
    assert r.status_code == 400
    assert "tags is not valid JSON" in r.json()["error"]


@pytest.fixture
def small_server(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> Iterator[tuple[LiveServer, Settings]]:
    settings = Settings(data_dir=tmp_path / "small", max_upload_bytes=2000)
    yield start_server(settings), settings


def test_upload_over_the_limit_is_413_and_stores_nothing(
    small_server: tuple[LiveServer, Settings], iris_csv: Path
) -> None:
    server, settings = small_server
    assert iris_csv.stat().st_size > 2000
    with api_client(server.url) as api:
        r = post(api, iris_csv, "iris")
        assert r.status_code == 413
        assert "exceeds the upload limit of 2000 bytes" in r.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: caught while streaming
            body, _ = multipart({"name": "iris"}, ("iris.csv", iris_csv.read_bytes()))
            for i in range(0, len(body), 512):
                yield body[i : i + 512]

        _, headers = multipart({})
        r = api.post("/datasets", content=chunks(), headers=headers)
        assert r.status_code == 413
        assert api.get("/datasets").json()["datasets"] == []
    assert blob_files(settings) == set()
    assert tmp_files(settings) == []


def test_unknown_dataset_is_404_everywhere(api: httpx.Client) -> None:
    for method, path in [
        ("GET", "/datasets/nope"),
        ("GET", "/datasets/nope/download"),
        ("DELETE", "/datasets/nope"),
    ]:
        r = api.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json() == {"error": "dataset 'nope' not found"}
    assert api.get("/datasets/Not..Valid").status_code == 422


def test_delete_then_404_and_the_name_is_free(api: httpx.Client, iris_csv: Path) -> None:
    created(api, iris_csv, "iris")
    assert api.delete("/datasets/iris").status_code == 204
    assert api.get("/datasets/iris").status_code == 404
    assert api.get("/datasets/iris/download").status_code == 404
    created(api, iris_csv, "iris")


def test_same_bytes_twice_share_one_blob(
    api: httpx.Client, settings: Settings, iris_csv: Path
) -> None:
    a = created(api, iris_csv, "a")
    b = created(api, iris_csv, "b")
    assert a["sha256"] == b["sha256"]
    assert blob_files(settings) == {a["sha256"]}


# -- tenants ------------------------------------------------------------------------
def test_other_tenants_datasets_are_invisible(
    server: LiveServer, api: httpx.Client, iris_csv: Path
) -> None:
    svc = service(server)
    mine = created(api, iris_csv, "shared-name")
    schema = DatasetSchema(rows=1)
    theirs = NewDataset(
        name="secret", format="csv", sha256=mine["sha256"], size=1, data_schema=schema
    )
    svc.store.create("other-tenant", theirs, "eve")
    svc.store.create("other-tenant", theirs.model_copy(update={"name": "shared-name"}), "eve")

    # The API caller (default tenant) sees none of the other tenant's datasets...
    assert [d["name"] for d in api.get("/datasets").json()["datasets"]] == ["shared-name"]
    for path in ["/datasets/secret", "/datasets/secret/download"]:
        r = api.get(path)
        assert r.status_code == 404
        assert r.json() == {"error": "dataset 'secret' not found"}
    assert api.delete("/datasets/secret").status_code == 404
    assert api.get("/datasets/shared-name").json()["created_by"] == "anonymous"
    # ...and the other tenant none of the caller's.
    assert svc.store.get("other-tenant", "shared-name").created_by == "eve"
    with pytest.raises(NotFound):
        svc.store.get("other-tenant", "nothing-here")
    assert api.delete("/datasets/shared-name").status_code == 204
    assert svc.store.get("other-tenant", "shared-name").created_by == "eve"


# -- SDK ------------------------------------------------------------------------------
def test_sdk_round_trip(server: LiveServer, tmp_path: Path) -> None:
    csv = write_iris(tmp_path / "iris.csv", "csv")
    folder = write_digits_folder(tmp_path / "digits", n=40)
    seen: list[tuple[int, int]] = []
    with Client(server.url) as client:
        ds = client.upload_dataset(
            "iris", csv, description="flowers", progress=lambda d, t: seen.append((d, t))
        )
        assert ds.format == "csv"
        assert ds.schema_.rows == 150
        assert seen[-1] == (csv.stat().st_size, csv.stat().st_size)

        images = client.upload_dataset("digits", folder)  # a folder is zipped
        assert images.format == "images"
        assert images.schema_.rows == 40
        assert images.schema_.extra["shape"] == [8, 8, 1]

        assert [d.name for d in client.list_datasets()] == ["digits", "iris"]
        assert [d.name for d in client.list_datasets(prefix="ir", page_size=1)] == ["iris"]
        assert client.get_dataset("iris") == ds

        (tmp_path / "out").mkdir()
        out = client.download_dataset("iris", tmp_path / "out")
        assert out == tmp_path / "out" / "iris.csv"
        assert out.read_bytes() == csv.read_bytes()
        named = client.download_dataset("iris", tmp_path / "copy.csv")
        assert named.read_bytes() == csv.read_bytes()

        with pytest.raises(Conflict):
            client.upload_dataset("iris", csv)
        with pytest.raises(InvalidInput, match="not a zip archive"):
            client.upload_dataset("bad", csv, format="npz")
        client.delete_dataset("iris")
        with pytest.raises(NotFound):
            client.get_dataset("iris")
        with pytest.raises(NotFound):
            client.download_dataset("iris", tmp_path / "gone.csv")
        assert not (tmp_path / "gone.csv").exists()
        assert not (tmp_path / "gone.csv.part").exists()
