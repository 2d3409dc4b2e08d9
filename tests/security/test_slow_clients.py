"""Slow clients (slowloris): ``modelplane serve`` cuts off a client that trickles its request
headers or stalls in its body, answers 408 where a response is possible, and keeps serving
everyone else meanwhile. Raw sockets on 127.0.0.1; every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from tests.conftest import ServerProcess, free_port

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
GIVE_UP = 15.0  # a test never waits longer than this for the server to act


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``modelplane serve`` child process with short timeouts, for the whole module."""
    port = free_port()
    env = {
        **os.environ,
        "MODELPLANE_DATA_DIR": str(tmp_path_factory.mktemp("slow") / "data"),
        "MODELPLANE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "MODELPLANE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "MODELPLANE_JOB_SLOTS": "0",
    }
    for name in ("MODELPLANE_DATABASE_URL", "MODELPLANE_AUTH", "MODELPLANE_STORE_URL"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "modelplane", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = ServerProcess(env, port, proc)
    try:
        server.wait_ready()
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def connect(srv: ServerProcess) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def make() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=GIVE_UP)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by GIVE_UP)."""
    s.settimeout(GIVE_UP)
    data = b""
    deadline = time.monotonic() + GIVE_UP
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server kept the connection open; got {data!r}")


def trickle(s: socket.socket, data: bytes, every: float) -> bool:
    """Send ``data`` a byte at a time; False once the server has closed the connection."""
    for i in range(len(data)):
        try:
            s.sendall(data[i : i + 1])
        except OSError:
            return False
        time.sleep(every)
    return True


def healthy(srv: ServerProcess) -> bool:
    return httpx.get(f"{srv.url}/healthz", timeout=5).status_code == 200


def timeout_error(response: bytes) -> str:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), response
    message: str = orjson.loads(body)["error"]
    return message


def test_trickled_headers_get_408_and_the_connection_closes(
    srv: ServerProcess, connect: Callable[[], socket.socket]
) -> None:
    s = connect()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"a" * 200
    started = time.monotonic()
    finished = trickle(s, request, every=0.1)  # 20 s worth of bytes, far over the timeout
    assert not finished or time.monotonic() - started < GIVE_UP
    assert "headers not received within" in timeout_error(read_until_closed(s))
    assert healthy(srv)


def test_a_connection_that_sends_nothing_is_closed(
    srv: ServerProcess, connect: Callable[[], socket.socket]
) -> None:
    s = connect()
    assert read_until_closed(s) == b""  # closed, silently: there was no request to answer
    assert healthy(srv)


def test_a_stalled_body_gets_408_and_the_route_sees_a_disconnect(
    srv: ServerProcess, connect: Callable[[], socket.socket]
) -> None:
    multipart = "multipart/form-data; boundary=b0undary"
    for path, kind, start in (
        ("/api/v1/models", "application/json", b'{"name": "sl'),
        ("/v2/models/nosuch/infer", "application/json", b'{"inputs": ['),
        ("/api/v1/datasets", multipart, b'--b0undary\r\nContent-Disposition: form-data; name="na'),
    ):
        s = connect()
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
        s.sendall(head.encode() + b"Content-Length: 1000\r\n\r\n" + start)
        assert "body stalled" in timeout_error(read_until_closed(s)), path
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/api/v1/models").json()["models"] == []  # nothing half-made
    assert healthy(srv)


def test_slow_but_steady_clients_are_served(
    srv: ServerProcess, connect: Callable[[], socket.socket]
) -> None:
    """Pauses shorter than the timeouts are fine, in the headers and in the body."""
    s = connect()
    body = orjson.dumps({"name": "steady"})
    head = "POST /api/v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    s.sendall(head.encode())
    time.sleep(HEADER_TIMEOUT / 3)
    s.sendall(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    for part in (body[:5], body[5:]):
        time.sleep(BODY_TIMEOUT / 3)
        s.sendall(part)
    assert read_until_closed(s).startswith(b"HTTP/1.1 201")


def test_many_slow_clients_do_not_stop_the_server(
    srv: ServerProcess, connect: Callable[[], socket.socket]
) -> None:
    slow = [connect() for _ in range(50)]
    for s in slow:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        assert all(c.get("/healthz").status_code == 200 for _ in range(20))
    for s in slow:
        assert "headers not received" in timeout_error(read_until_closed(s))
    assert healthy(srv)


def test_oversized_headers_get_431(
    srv: ServerProcess, connect: Callable[[], socket.socket]
) -> None:
    s = connect()
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100))  # ~100 KiB
    with contextlib.suppress(OSError):  # closed while still sending: the answer is waiting
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
    head = read_until_closed(s)
    assert head.startswith(b"HTTP/1.1 431"), head[:200]
    assert b"exceed" in head and head.count(b"HTTP/1.1") == 1
    with httpx.Client(base_url=srv.url, timeout=5) as c:  # ordinary headers are fine
        assert c.get("/healthz", headers={"X-Big": "v" * 8000}).status_code == 200
