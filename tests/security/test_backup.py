"""`modelplane backup` / `modelplane restore`: a server's models, deployments and datasets
come back in an empty data dir, serving the same predictions with the same ETags."""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.conftest import LiveServer, pg_schema_url
from tests.security.helpers import api, cli, infer, make_settings, new_key, settle, upload

CSV = b"a,b,label\n" + b"".join(f"{i},{i * 2},{i % 2}\n".encode() for i in range(200))
ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 8.0, 0.0]]


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    """An empty URL (SQLite in the data dir) or a fresh PostgreSQL schema's URL."""
    if backend == "sqlite":
        yield ""
    else:
        with pg_schema_url() as url:
            yield url


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def populate(c: httpx.Client, url: str) -> dict[str, Any]:
    """A model with an alias, a deployment following it, a dataset; what a client sees."""
    v = upload(c, "double", double_onnx(), "double.onnx", "onnx", description="doubles")
    assert c.put("/models/double/aliases/production", json={"version": 1}).status_code == 200
    assert c.patch("/models/double", json={"trusted": True}).status_code == 200
    r = c.post("/deployments", json={"name": "double", "model": "double@production"})
    assert r.status_code == 201, r.text
    r = c.post("/datasets", data={"name": "pairs"}, files={"file": ("pairs.csv", CSV, "text/csv")})
    assert r.status_code == 201, r.text
    assert settle(c, "double")["state"] == "ready"
    return observe(c, url) | {"sha256": v["artifact"]["sha256"]}


def observe(c: httpx.Client, url: str) -> dict[str, Any]:
    artifact = c.get("/models/double/versions/production/artifact")
    dataset = c.get("/datasets/pairs/download")
    assert artifact.status_code == dataset.status_code == 200
    return {
        "predictions": infer(url, "double", ROWS, "x"),
        "artifact_etag": artifact.headers["etag"],
        "artifact": hashlib.sha256(artifact.content).hexdigest(),
        "dataset_etag": dataset.headers["etag"],
        "dataset": hashlib.sha256(dataset.content).hexdigest(),
        "model": {k: v for k, v in c.get("/models/double").json().items() if k != "updated_at"},
        "aliases": c.get("/models/double/aliases").json(),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_round_trip_serves_the_same_model(
    tmp_path: Path,
    backend: str,
    encrypted: bool,
    start_server: Callable[[Settings], LiveServer],
) -> None:
    key = new_key() if encrypted else None
    backup = tmp_path / "backup.tar"
    with database(backend) as src_url:
        src = make_settings(tmp_path / "src", key, database_url=src_url)
        srv = start_server(src)
        with api(srv.url) as c:
            before = populate(c, srv.url)
            done = cli(src, "backup", str(backup))  # while the server runs
            assert done.returncode == 0, done.stderr
            assert "2 blob(s)" in done.stdout, done.stdout
        srv.stop()

    with tarfile.open(backup) as tf:
        names = tf.getnames()
    assert names[-1] == "manifest.json"
    assert any(n.startswith("database/") for n in names)
    if encrypted:  # blobs travel sealed: the backup holds no plaintext of them
        assert all(n.endswith(".enc") for n in names if n.startswith("blobs/"))
        assert double_onnx()[30:70] not in backup.read_bytes()
        assert b"0,0,0\n" not in backup.read_bytes()

    with database(backend) as dst_url:
        dst = make_settings(tmp_path / "dst", key, database_url=dst_url)
        done = cli(dst, "restore", str(backup))
        assert done.returncode == 0, done.stderr
        srv = start_server(dst)
        with api(srv.url) as c:
            assert settle(c, "double")["state"] == "ready"
            after = observe(c, srv.url)
            after["sha256"] = before["sha256"]
            assert after == before
            # Ids continue after the restored ones (sequences moved on PostgreSQL).
            v2 = upload(c, "double", double_onnx(3), "double3.onnx", "onnx")
            assert v2["version"] == 2
        srv.stop()


def test_restore_refuses_a_non_empty_data_dir_unless_forced(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    src = make_settings(tmp_path / "src", None)
    srv = start_server(src)
    with api(srv.url) as c:
        upload(c, "double", double_onnx(), "double.onnx", "onnx")
    srv.stop()
    backup = tmp_path / "b.tar.gz"
    assert cli(src, "backup", str(backup)).returncode == 0

    dst = make_settings(tmp_path / "dst", None)
    other = start_server(dst)  # a data dir in use: a database and another model
    with api(other.url) as c:
        upload(c, "other", double_onnx(2), "other.onnx", "onnx")
    other.stop()
    done = cli(dst, "restore", str(backup))
    assert done.returncode != 0 and "not empty" in done.stderr, done.stderr

    done = cli(dst, "restore", "--force", str(backup))
    assert done.returncode == 0, done.stderr
    srv = start_server(dst)
    with api(srv.url) as c:
        names = [m["name"] for m in c.get("/models").json()["models"]]
        assert names == ["double"]
        assert c.get("/models/double/versions/1/artifact").content == double_onnx()


def test_a_damaged_backup_is_refused_and_leaves_the_data_dir_empty(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    src = make_settings(tmp_path / "src", new_key())
    srv = start_server(src)
    with api(srv.url) as c:
        upload(c, "double", double_onnx(), "double.onnx", "onnx")
    srv.stop()
    backup = tmp_path / "b.tar"
    assert cli(src, "backup", str(backup)).returncode == 0

    raw = bytearray(backup.read_bytes())
    with tarfile.open(backup) as tf:
        blob = next(m for m in tf.getmembers() if m.name.startswith("blobs/"))
    raw[blob.offset_data + 50] ^= 1  # one bit inside a stored blob
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(raw))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(bytes(raw[: blob.offset_data + 20]))

    dst = make_settings(tmp_path / "dst", src.encryption_key.get_secret_value())  # type: ignore[union-attr]
    for bad, problem in ((damaged, "checksum mismatch"), (truncated, "backup")):
        done = cli(dst, "restore", str(bad))
        assert done.returncode != 0 and problem in done.stderr, done.stderr
        leftovers = [p for p in (tmp_path / "dst").rglob("*") if p.is_file()]
        assert leftovers == []
    assert cli(dst, "restore", str(backup)).returncode == 0


def test_restore_warns_when_the_keys_are_missing(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    src = make_settings(tmp_path / "src", new_key())
    srv = start_server(src)
    with api(srv.url) as c:
        upload(c, "double", double_onnx(), "double.onnx", "onnx")
    srv.stop()
    backup = tmp_path / "b.tar"
    assert cli(src, "backup", str(backup)).returncode == 0
    done = cli(make_settings(tmp_path / "dst", None), "restore", str(backup))
    assert done.returncode == 0
    assert "warning" in done.stderr and "key id" in done.stderr


@pytest.mark.postgres
def test_a_sqlite_backup_restores_into_postgresql(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    src = make_settings(tmp_path / "src", None)
    srv = start_server(src)
    with api(srv.url) as c:
        before = populate(c, srv.url)
    srv.stop()
    backup = tmp_path / "b.tar"
    assert cli(src, "backup", str(backup)).returncode == 0
    with pg_schema_url() as url:
        dst = make_settings(tmp_path / "dst", None, database_url=url)
        done = cli(dst, "restore", str(backup))
        assert done.returncode == 0, done.stderr
        srv = start_server(dst)
        with api(srv.url) as c:
            assert settle(c, "double")["state"] == "ready"
            assert observe(c, srv.url) | {"sha256": before["sha256"]} == before
        srv.stop()


def test_a_backup_missing_a_referenced_blob_fails(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    src = make_settings(tmp_path / "src", None)
    srv = start_server(src)
    with api(srv.url) as c:
        v = upload(c, "double", double_onnx(), "double.onnx", "onnx")
    srv.stop()
    digest = v["artifact"]["sha256"]
    (src.resolved_store_path() / "blobs" / "sha256" / digest[:2] / digest).unlink()
    backup = tmp_path / "b.tar"
    done = cli(src, "backup", str(backup))
    assert done.returncode != 0 and "not in the store" in done.stderr, done.stderr
    assert not backup.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
