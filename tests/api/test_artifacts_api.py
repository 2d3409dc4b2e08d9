"""Artifact upload and download over HTTP: ETag, Range, dedup, archives, size limits."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.api.conftest import (
    api_client,
    blob_files,
    create_model,
    multipart,
    tar_bytes,
    tmp_files,
    upload,
    version_numbers,
    zip_bytes,
)
from tests.conftest import LiveServer


def _upload_ok(api: httpx.Client, model: str, content: bytes, **kw: Any) -> dict[str, Any]:
    r = upload(api, model, content, **kw)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def model_v1(api: httpx.Client, onnx_bytes: bytes) -> dict[str, Any]:
    create_model(api, "m")
    return _upload_ok(api, "m", onnx_bytes)


# -- download ----------------------------------------------------------------
def test_download_returns_the_uploaded_bytes_with_sha256_etag(
    api: httpx.Client, onnx_bytes: bytes, model_v1: dict[str, Any]
) -> None:
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    assert model_v1["artifact"]["sha256"] == digest
    api.put("/models/m/aliases/prod", json={"version": 1}).raise_for_status()
    for selector in ("1", "latest", "prod"):
        r = api.get(f"/models/m/versions/{selector}/artifact")
        assert r.status_code == 200, r.text
        assert r.content == onnx_bytes
        assert r.headers["etag"] == f'"{digest}"'
        assert r.headers["content-length"] == str(len(onnx_bytes))
        assert "model.onnx" in r.headers["content-disposition"]


def test_range_request_returns_the_slice(
    api: httpx.Client, onnx_bytes: bytes, model_v1: dict[str, Any]
) -> None:
    size = len(onnx_bytes)
    r = api.get("/models/m/versions/1/artifact", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206
    assert r.content == onnx_bytes[:10]
    assert r.headers["content-range"] == f"bytes 0-9/{size}"

    r = api.get("/models/m/versions/1/artifact", headers={"Range": "bytes=20-"})
    assert r.status_code == 206
    assert r.content == onnx_bytes[20:]
    assert r.headers["content-range"] == f"bytes 20-{size - 1}/{size}"

    r = api.get("/models/m/versions/1/artifact", headers={"Range": f"bytes={size + 10}-"})
    assert r.status_code == 416


def test_if_none_match_with_the_etag_is_304(
    api: httpx.Client, onnx_bytes: bytes, model_v1: dict[str, Any]
) -> None:
    etag = api.get("/models/m/versions/1/artifact").headers["etag"]
    r = api.get("/models/m/versions/1/artifact", headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    r = api.get("/models/m/versions/1/artifact", headers={"If-None-Match": f'"x", {etag}'})
    assert r.status_code == 304
    r = api.get("/models/m/versions/1/artifact", headers={"If-None-Match": '"something-else"'})
    assert r.status_code == 200
    assert r.content == onnx_bytes


def test_identical_content_is_stored_once(
    api: httpx.Client, settings: Settings, onnx_bytes: bytes
) -> None:
    create_model(api, "a")
    create_model(api, "b")
    v1 = _upload_ok(api, "a", onnx_bytes)
    v2 = _upload_ok(api, "a", onnx_bytes, filename="again.onnx")
    v3 = _upload_ok(api, "b", onnx_bytes)
    assert (v1["version"], v2["version"], v3["version"]) == (1, 2, 1)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    assert {v["artifact"]["sha256"] for v in (v1, v2, v3)} == {digest}
    assert blob_files(settings) == {digest}

    # Deleting one version leaves the shared blob for the others.
    assert api.delete("/models/a/versions/1").status_code == 204
    assert api.get("/models/a/versions/2/artifact").content == onnx_bytes
    assert api.get("/models/b/versions/1/artifact").content == onnx_bytes


# -- directory artifacts -----------------------------------------------------
def _members(onnx_bytes: bytes) -> dict[str, bytes]:
    return {"model.onnx": onnx_bytes, "extra/labels.txt": b"cat\ndog\n", "README": b"hi"}


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("pack", "filename", "packaging", "expected_packaging"),
    [
        (tar_bytes, "bundle.bin", "tar", "tar"),
        (_tgz, "bundle.tar.gz", None, "tar"),
        (zip_bytes, "bundle.bin", "zip", "zip"),
        (zip_bytes, "bundle.zip", None, "zip"),
    ],
)
def test_directory_upload_lists_its_files(
    api: httpx.Client,
    onnx_bytes: bytes,
    pack: Callable[[dict[str, bytes]], bytes],
    filename: str,
    packaging: str | None,
    expected_packaging: str,
) -> None:
    create_model(api, "m")
    members = _members(onnx_bytes)
    archive = pack(members)
    meta = {"packaging": packaging} if packaging else {}
    v = _upload_ok(api, "m", archive, filename=filename, **meta)
    assert v["artifact"]["packaging"] == expected_packaging
    assert v["artifact"]["files"] == {name: len(data) for name, data in members.items()}
    assert v["artifact"]["sha256"] == hashlib.sha256(archive).hexdigest()
    # The ONNX signature is read from model.onnx inside the archive.
    assert [i["name"] for i in v["signature"]["inputs"]] == ["x"]
    assert api.get("/models/m/versions/1").json()["artifact"]["files"] == v["artifact"]["files"]
    assert api.get("/models/m/versions/1/artifact").content == archive


@pytest.mark.parametrize(
    ("archive", "packaging", "fragment"),
    [
        (lambda b: tar_bytes({"model.onnx": b, "../evil.txt": b"x"}), "tar", "'../evil.txt'"),
        (lambda b: tar_bytes({"model.onnx": b, "a/../../x": b"x"}), "tar", "'a/../../x'"),
        (lambda b: tar_bytes({"/etc/evil": b"x", "model.onnx": b}), "tar", "'/etc/evil'"),
        (lambda b: zip_bytes({"model.onnx": b, "../evil.txt": b"x"}), "zip", "'../evil.txt'"),
        (lambda b: zip_bytes({"model.onnx": b, "..\\evil.txt": b"x"}), "zip", "evil.txt"),
        (lambda b: b"not an archive at all" * 10, "tar", "not a valid tar archive"),
        (lambda b: b"not an archive at all" * 10, "zip", "not a valid zip archive"),
        (lambda b: tar_bytes({"notes.txt": b"x"}), "tar", "no .onnx file"),
    ],
)
def test_bad_archive_is_refused_and_nothing_stored(
    api: httpx.Client,
    settings: Settings,
    model_v1: dict[str, Any],
    archive: Callable[[bytes], bytes],
    packaging: str,
    fragment: str,
) -> None:
    blobs_before = blob_files(settings)
    r = upload(api, "m", archive(double_onnx(3)), filename="bundle", packaging=packaging)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]
    assert version_numbers(api, "m") == [1]
    assert blob_files(settings) == blobs_before
    assert tmp_files(settings) == []


def test_archive_with_a_symlink_is_refused(
    api: httpx.Client, settings: Settings, model_v1: dict[str, Any]
) -> None:
    blobs_before = blob_files(settings)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = double_onnx(3)
        info = tarfile.TarInfo("model.onnx")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    r = upload(api, "m", buf.getvalue(), filename="bundle.tar")
    assert r.status_code == 422
    assert "link" in r.json()["error"]
    assert version_numbers(api, "m") == [1]
    assert blob_files(settings) == blobs_before


# -- size limits -------------------------------------------------------------
def _big_onnx(size: int) -> bytes:
    model = onnx.load_model_from_string(double_onnx())
    model.doc_string = "x" * size
    data = model.SerializeToString()
    assert len(data) > size
    return bytes(data)


@pytest.fixture
def small_limit_server(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> LiveServer:
    return start_server(Settings(data_dir=tmp_path / "small", max_upload_bytes=1000))


def _assert_nothing_new(client: httpx.Client, settings: Settings, blobs: set[str]) -> None:
    assert version_numbers(client, "m") == [1]
    assert blob_files(settings) == blobs
    assert tmp_files(settings) == []


def test_oversized_upload_with_content_length_is_413(
    api: httpx.Client, small_limit_server: LiveServer, onnx_bytes: bytes
) -> None:
    big = _big_onnx(5000)
    # The same file is a fine artifact where the limit allows it.
    create_model(api, "m")
    assert _upload_ok(api, "m", big)["artifact"]["size"] == len(big)

    settings = small_limit_server.settings
    with api_client(small_limit_server.url) as small:
        create_model(small, "m")
        _upload_ok(small, "m", onnx_bytes)
        blobs = blob_files(settings)
        r = upload(small, "m", big)
        assert "content-length" in r.request.headers
        assert r.status_code == 413, r.text
        assert "1000" in r.json()["error"]
        _assert_nothing_new(small, settings, blobs)


def test_oversized_chunked_upload_is_413(small_limit_server: LiveServer, onnx_bytes: bytes) -> None:
    settings = small_limit_server.settings
    body, headers = multipart(
        {"metadata": json.dumps({"format": "onnx"})}, ("m.onnx", _big_onnx(5000))
    )

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    with api_client(small_limit_server.url) as small:
        create_model(small, "m")
        _upload_ok(small, "m", onnx_bytes)
        blobs = blob_files(settings)
        r = small.post("/models/m/versions", content=chunks(), headers=headers)
        assert "content-length" not in r.request.headers
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert r.status_code == 413, r.text
        _assert_nothing_new(small, settings, blobs)

        # A small chunked upload goes through.
        body, headers = multipart({"format": "onnx"}, ("m.onnx", double_onnx(2)))
        r = small.post("/models/m/versions", content=iter([body]), headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 2


def test_declared_length_far_over_the_limit_is_413_before_reading(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer], onnx_bytes: bytes
) -> None:
    settings = Settings(data_dir=tmp_path / "tiny", max_upload_bytes=1000, max_json_bytes=1000)
    srv = start_server(settings)
    with api_client(srv.url) as client:
        create_model(client, "m")
        _upload_ok(client, "m", onnx_bytes)
        blobs = blob_files(settings)
        r = upload(client, "m", _big_onnx(5000))
        assert r.status_code == 413, r.text
        assert "exceeds the limit" in r.json()["error"]
        _assert_nothing_new(client, settings, blobs)
