"""Helpers for the HTTP API tests: a client rooted at /api/v1, uploads, store inspection."""

from __future__ import annotations

import io
import json
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.settings import Settings
from tests.conftest import LiveServer

BOUNDARY = "modelplane-test-boundary-7f3a"


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client whose paths start below /api/v1."""
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as c:
        yield c


def api_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api/v1", timeout=30)


def create_model(client: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    r = client.post("/models", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def upload(
    client: httpx.Client,
    model: str,
    content: bytes,
    *,
    filename: str = "model.onnx",
    fmt: str = "onnx",
    **meta: Any,
) -> httpx.Response:
    """Upload ``content`` as a new version the way the SDK does: a file part plus metadata."""
    return client.post(
        f"/models/{model}/versions",
        files={"file": (filename, content, "application/octet-stream")},
        data={"metadata": json.dumps({"format": fmt, **meta})},
    )


def multipart(
    fields: dict[str, str], file: tuple[str, bytes] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A hand-built multipart body (for the cases httpx would not send) and its headers."""
    out = bytearray()
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    if file is not None:
        out += multipart_file_head(file[0])
        out += file[1] + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart_file_head(filename: str) -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def blob_files(settings: Settings) -> set[str]:
    """Names of every committed blob in the store."""
    root = settings.resolved_store_path() / "blobs"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def tmp_files(settings: Settings) -> list[Path]:
    root = settings.resolved_store_path() / "tmp"
    return sorted(root.iterdir()) if root.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def version_numbers(client: httpx.Client, model: str) -> list[int]:
    r = client.get(f"/models/{model}/versions", params={"order": "asc"})
    assert r.status_code == 200, r.text
    return [v["version"] for v in r.json()["versions"]]


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
