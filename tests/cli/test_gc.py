"""`modelplane gc` removes only blobs that nothing references."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from modelplane.settings import Settings
from tests.conftest import LiveServer


def test_gc_keeps_dataset_and_version_blobs_and_removes_orphans(
    server: LiveServer, settings: Settings, onnx_bytes: bytes, tmp_path: Path
) -> None:
    api = httpx.Client(base_url=f"{server.url}/api/v1", timeout=30)
    csv = tmp_path / "tiny.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    with csv.open("rb") as fh:
        r = api.post("/datasets", data={"name": "tiny"}, files={"file": ("tiny.csv", fh)})
    assert r.status_code == 201, r.text
    assert api.post("/models", json={"name": "kept"}).status_code == 201
    up = api.post(
        "/models/kept/versions", data={"format": "onnx"}, files={"file": ("m.onnx", onnx_bytes)}
    )
    assert up.status_code == 201
    blobs = settings.resolved_store_path() / "blobs" / "sha256"
    before = {p.name for p in blobs.rglob("*") if p.is_file()}
    # An orphan: a blob no version, dataset or job points to.
    orphan = blobs / "ff" / ("ff" * 32)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"nobody's")

    env = {**os.environ, "MODELPLANE_DATA_DIR": str(settings.data_dir),
           "MODELPLANE_BLOB_GC_GRACE_SECONDS": "0"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "modelplane", "gc"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "removed 1 unreferenced blob" in out.stdout
    assert not orphan.exists()
    assert {p.name for p in blobs.rglob("*") if p.is_file()} == before
    assert api.get("/datasets/tiny/download").content == csv.read_bytes()
    assert api.get("/models/kept/versions/1/artifact").content == onnx_bytes
