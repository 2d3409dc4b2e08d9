"""Encryption at rest through a live server: uploads land sealed, and everything that reads
them (downloads with ETag and Range, deployments, datasets) works as before."""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from modelplane.storage.keys import key_id, parse_keys
from tests.conftest import LiveServer
from tests.security.helpers import api, infer, make_settings, new_key, settle, upload

CSV = b"sepal_length,sepal_width,label\n" + b"".join(
    f"{i / 10:.1f},{i % 7}.5,class-{i % 3}\n".encode() for i in range(400)
)


def stored_files(settings: Settings) -> list[Path]:
    return [p for p in (settings.resolved_store_path() / "blobs").rglob("*") if p.is_file()]


def sealed_with(path: Path) -> bytes:
    raw = path.read_bytes()
    assert raw[:4] == b"MPBE"
    return raw[5:13]


@pytest.fixture
def key() -> str:
    return new_key()


def test_uploads_are_sealed_and_every_reader_sees_plaintext(
    tmp_path: Path, key: str, start_server: Callable[[Settings], LiveServer]
) -> None:
    settings = make_settings(tmp_path / "data", key)
    srv = start_server(settings)
    model = double_onnx()
    with api(srv.url) as c:
        v = upload(c, "double", model, "double.onnx", "onnx")
        digest = hashlib.sha256(model).hexdigest()
        assert v["artifact"]["sha256"] == digest
        r = c.post(
            "/datasets",
            data={"name": "iris"},
            files={"file": ("iris.csv", CSV, "text/csv")},
        )
        assert r.status_code == 201, r.text

        files = stored_files(settings)
        assert sorted(p.name for p in files) == sorted(
            f"{d}.enc" for d in (digest, hashlib.sha256(CSV).hexdigest())
        )
        on_disk = b"".join(p.read_bytes() for p in files)
        assert model[40:80] not in on_disk
        assert b"sepal_length" not in on_disk and b"class-1" not in on_disk
        assert all(sealed_with(p) == key_id(parse_keys(key)[0]) for p in files)

        # Downloads: same bytes, same ETag as without encryption, ranges decrypted in place.
        r = c.get("/models/double/versions/1/artifact")
        assert r.status_code == 200 and r.content == model
        assert r.headers["etag"] == f'"{digest}"'
        assert r.headers["content-length"] == str(len(model))
        r = c.get("/models/double/versions/1/artifact", headers={"Range": "bytes=5-24"})
        assert r.status_code == 206 and r.content == model[5:25]
        assert r.headers["content-range"] == f"bytes 5-24/{len(model)}"
        r = c.get("/models/double/versions/1/artifact", headers={"Range": "bytes=-7"})
        assert r.status_code == 206 and r.content == model[-7:]
        r = c.get("/datasets/iris/download", headers={"Range": "bytes=100-"})
        assert r.status_code == 206 and r.content == CSV[100:]
        r = c.get(
            "/datasets/iris/download",
            headers={"If-None-Match": f'"{hashlib.sha256(CSV).hexdigest()}"'},
        )
        assert r.status_code == 304

        # A deployment loads from the decrypted cache, which only the owner can enter.
        r = c.post("/deployments", json={"name": "double", "model": "double"})
        assert r.status_code == 201, r.text
        assert settle(c, "double")["state"] == "ready"
        out = infer(srv.url, "double", [[1, 2, 3, 4]], "x")
        assert np.allclose(out["y"], [2, 4, 6, 8])
        for cache in ("artifacts", "blobs"):
            folder = settings.data_dir / "cache" / cache
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, cache


def test_multiple_ranges_and_if_range(
    tmp_path: Path, key: str, start_server: Callable[[Settings], LiveServer]
) -> None:
    srv = start_server(make_settings(tmp_path / "data", key))
    model = double_onnx()
    size = len(model)
    with api(srv.url) as c:
        v = upload(c, "double", model, "double.onnx", "onnx")
        etag = f'"{v["artifact"]["sha256"]}"'
        url = "/models/double/versions/1/artifact"
        r = c.get(url, headers={"Range": "bytes=0-3, 10-12, 2-5"})
        assert r.status_code == 206
        boundary = re.search(r"boundary=(\S+)", r.headers["content-type"])
        assert boundary is not None
        parts = r.content.split(f"--{boundary.group(1)}".encode())
        assert b"Content-Range: bytes 0-5/" in parts[1] and parts[1].endswith(model[0:6] + b"\r\n")
        assert b"Content-Range: bytes 10-12/" in parts[2] and parts[2].endswith(
            model[10:13] + b"\r\n"
        )
        assert int(r.headers["content-length"]) == len(r.content)
        r = c.get(url, headers={"Range": "bytes=4-8", "If-Range": etag})
        assert r.status_code == 206 and r.content == model[4:9]
        r = c.get(url, headers={"Range": "bytes=4-8", "If-Range": '"stale"'})
        assert r.status_code == 200 and r.content == model
        r = c.get(url, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        r = c.get(url, headers={"Range": "pages=1-2"})
        assert r.status_code == 200 and r.content == model


def test_rotation_and_wrong_keys_through_the_server(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    a, b = new_key(), new_key()
    data = tmp_path / "data"
    first = start_server(make_settings(data, a))
    with api(first.url) as c:
        upload(c, "double", double_onnx(), "double.onnx", "onnx")
    first.stop()

    # A server with only a different key: a clear error naming the key, never garbage.
    wrong = start_server(make_settings(data, b))
    with api(wrong.url) as c:
        r = c.get("/models/double/versions/1/artifact")
        assert r.status_code == 500
        assert key_id(parse_keys(a)[0]).hex() in r.json()["error"]
        r = c.post("/deployments", json={"name": "double", "model": "double"})
        assert r.status_code == 201, r.text
        s = settle(c, "double")
        assert s["state"] == "failed" and "key id" in s["reason"], s
    wrong.stop()

    rotated = start_server(make_settings(data, f"{b},{a}"))
    with api(rotated.url) as c:
        assert c.get("/models/double/versions/1/artifact").content == double_onnx()
        v2 = upload(c, "double", double_onnx(3), "double3.onnx", "onnx")
        new = stored_files(rotated.settings)
        by_name = {p.name: p for p in new}
        assert sealed_with(by_name[f"{v2['artifact']['sha256']}.enc"]) == key_id(parse_keys(b)[0])
        old = hashlib.sha256(double_onnx()).hexdigest()
        assert sealed_with(by_name[f"{old}.enc"]) == key_id(parse_keys(a)[0])


def test_a_tampered_blob_is_refused_on_download(
    tmp_path: Path, key: str, start_server: Callable[[Settings], LiveServer]
) -> None:
    settings = make_settings(tmp_path / "data", key)
    srv = start_server(settings)
    with api(srv.url) as c:
        upload(c, "double", double_onnx(), "double.onnx", "onnx")
        (blob,) = stored_files(settings)
        raw = bytearray(blob.read_bytes())
        raw[60] ^= 0x01
        blob.write_bytes(bytes(raw))
        r = c.get("/models/double/versions/1/artifact")
        assert r.status_code == 500
        assert "failed authentication" in r.json()["error"]
        with pytest.raises(httpx.HTTPError):  # nothing of it ever reaches a client
            c.get(
                "/models/double/versions/1/artifact", headers={"Range": "bytes=0-3"}
            ).raise_for_status()
