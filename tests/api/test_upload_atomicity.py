"""Uploads are all-or-nothing: a dead client, a killed server or a race leaves no half version."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.api.conftest import (
    BOUNDARY,
    api_client,
    blob_files,
    create_model,
    multipart,
    multipart_file_head,
    tmp_files,
    upload,
    version_numbers,
    wait_for,
)
from tests.conftest import LiveServer, ServerProcess

MiB = 1024 * 1024


def _upload_head() -> bytes:
    """The start of a multipart upload: the metadata field and the file part's headers."""
    fields, _ = multipart({"metadata": json.dumps({"format": "onnx"})})
    return fields.removesuffix(f"--{BOUNDARY}--\r\n".encode()) + multipart_file_head("big.onnx")


def _temp_bytes(settings: Settings) -> int:
    total = 0
    for p in tmp_files(settings):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            continue
    return total


def test_client_dying_mid_upload_leaves_nothing(
    server: LiveServer, api: httpx.Client, settings: Settings, onnx_bytes: bytes
) -> None:
    create_model(api, "m")
    partial = _upload_head() + b"\0" * (3 * MiB)
    head = (
        "POST /api/v1/models/m/versions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(partial) + 50 * MiB}\r\n"
        "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + partial)
        # The server is streaming the artifact into a temp file ...
        assert wait_for(lambda: _temp_bytes(settings) > 0), "upload never reached tmp/"
    # ... and the client is gone before the body is complete.
    assert wait_for(lambda: tmp_files(settings) == []), tmp_files(settings)
    assert version_numbers(api, "m") == []
    assert api.get("/models/m").json()["latest_version"] is None
    assert blob_files(settings) == set()

    r = upload(api, "m", onnx_bytes)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1


@pytest.mark.slow
def test_server_killed_mid_upload_leaves_nothing(
    settings: Settings,
    spawn_server: Callable[[Settings], ServerProcess],
    onnx_bytes: bytes,
) -> None:
    first = spawn_server(settings)
    with api_client(first.url) as c:
        create_model(c, "m")

    stop = threading.Event()
    failures: list[BaseException] = []
    responses: list[httpx.Response] = []

    def slow_body() -> Iterator[bytes]:
        yield _upload_head()
        for _ in range(500):  # at most ~31 MiB over ~10 s if the kill never came
            if stop.is_set():
                return
            yield b"\0" * (64 * 1024)
            time.sleep(0.02)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    def send() -> None:
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
        try:
            with api_client(first.url) as c:
                responses.append(c.post("/models/m/versions", content=slow_body(), headers=headers))
        except httpx.HTTPError as exc:
            failures.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        # Kill only once artifact bytes have reached the server's temp file.
        assert wait_for(lambda: _temp_bytes(settings) > 0, timeout=30), "upload never started"
        first.kill()
    finally:
        stop.set()
        sender.join(timeout=30)
    assert not sender.is_alive()
    assert responses == [] and len(failures) == 1, (responses, failures)

    second = spawn_server(settings)
    with api_client(second.url) as c:
        assert version_numbers(c, "m") == []
        assert c.get("/models/m").json()["latest_version"] is None
        assert blob_files(settings) == set()
        r = upload(c, "m", onnx_bytes)
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 1
        assert c.get("/models/m/versions/1/artifact").content == onnx_bytes
    assert blob_files(settings) == {hashlib.sha256(onnx_bytes).hexdigest()}


@pytest.fixture
def db_server(
    db_url: str, tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> LiveServer:
    return start_server(Settings(data_dir=tmp_path / "data", database_url=db_url))


def _upload_all_at_once(url: str, contents: list[bytes]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(contents))

    def one(i: int) -> httpx.Response:
        with api_client(url) as c:
            barrier.wait(timeout=30)
            return upload(c, "m", contents[i], filename=f"m{i}.onnx")

    with ThreadPoolExecutor(len(contents)) as pool:
        futures = [pool.submit(one, i) for i in range(len(contents))]
        return [f.result(timeout=120) for f in futures]


def test_concurrent_uploads_get_versions_one_to_eight(db_server: LiveServer) -> None:
    contents = [double_onnx(width) for width in range(1, 9)]
    assert len(set(contents)) == 8
    with api_client(db_server.url) as c:
        create_model(c, "m")
        responses = _upload_all_at_once(db_server.url, contents)
        assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
        numbers = [r.json()["version"] for r in responses]
        assert sorted(numbers) == list(range(1, 9))
        assert version_numbers(c, "m") == list(range(1, 9))
        assert c.get("/models/m").json()["latest_version"] == 8
        # Every number holds the bytes its own uploader sent.
        for number, content in zip(numbers, contents, strict=True):
            assert c.get(f"/models/m/versions/{number}/artifact").content == content
    assert blob_files(db_server.settings) == {hashlib.sha256(b).hexdigest() for b in contents}


def test_concurrent_uploads_of_the_same_bytes_share_one_blob(
    db_server: LiveServer, onnx_bytes: bytes
) -> None:
    with api_client(db_server.url) as c:
        create_model(c, "m")
        responses = _upload_all_at_once(db_server.url, [onnx_bytes] * 8)
        assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
        assert version_numbers(c, "m") == list(range(1, 9))
        for number in range(1, 9):
            assert c.get(f"/models/m/versions/{number}/artifact").content == onnx_bytes
    assert blob_files(db_server.settings) == {hashlib.sha256(onnx_bytes).hexdigest()}
    assert tmp_files(db_server.settings) == []
