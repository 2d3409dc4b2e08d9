"""``/healthz`` answers while the process runs; ``/readyz`` and ``/v2/health/ready`` fail
(503) while the database or the artifact store cannot be reached, and recover after."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from modelplane.settings import Settings
from tests.conftest import LiveServer, free_port, pg_schema_url


def _states(c: httpx.Client) -> tuple[int, int, int]:
    return (
        c.get("/healthz").status_code,
        c.get("/readyz").status_code,
        c.get("/v2/health/ready").status_code,
    )


def test_ready_fails_while_the_artifact_store_is_gone(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    server = start_server(Settings(data_dir=tmp_path / "data", job_slots=0))
    store = server.settings.resolved_store_path()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert _states(c) == (200, 200, 200)
        assert c.get("/readyz").json()["checks"] == {"database": "ok", "artifact_store": "ok"}
        store.rename(tmp_path / "elsewhere")  # an unmounted volume, a deleted folder
        try:
            assert _states(c) == (200, 503, 503)
            r = c.get("/readyz")
            assert r.headers["retry-after"] and "artifact_store" in r.json()["error"]
            assert r.json()["checks"]["database"] == "ok"
            assert c.get("/v2/health/ready").json()["ready"] is False
        finally:
            (tmp_path / "elsewhere").rename(store)
        assert _states(c) == (200, 200, 200)


class Proxy:
    """A TCP forwarder to PostgreSQL that can be cut (every connection closed) and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the accepting thread (close alone won't)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxied_pg() -> Iterator[tuple[str, Proxy]]:
    with pg_schema_url() as url:
        proxy = Proxy(("127.0.0.1", 5432))
        proxy.start()
        try:
            yield url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), proxy
        finally:
            proxy.cut()


@pytest.mark.postgres
def test_ready_fails_while_the_database_is_unreachable(
    proxied_pg: tuple[str, Proxy], tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    url, proxy = proxied_pg
    assert "5432" not in url
    server = start_server(
        Settings(data_dir=tmp_path / "data", database_url=url, job_slots=0, metrics=True)
    )
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert _states(c) == (200, 200, 200)
        proxy.cut()
        try:
            assert _states(c) == (200, 503, 503)
            body = c.get("/readyz").json()
            assert body["checks"]["artifact_store"] == "ok"
            assert body["checks"]["database"] != "ok" and "database" in body["error"]
        finally:
            proxy.start()
        assert _states(c) == (200, 200, 200)
