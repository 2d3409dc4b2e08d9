"""Shared fixtures: settings in a temp dir, SQLite and PostgreSQL databases, live servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from modelplane.app import create_app
from modelplane.db import make_engine, upgrade
from modelplane.examples import double_onnx
from modelplane.registry import SqlRegistryStore
from modelplane.settings import Settings

PG_URL = os.environ.get(
    "MODELPLANE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_available() -> str | None:
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is not reachable: {exc}"


@contextlib.contextmanager
def pg_schema_url() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards; yields a URL pinned to it."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        with pg_schema_url() as url:
            yield url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlRegistryStore]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield SqlRegistryStore(engine)
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def onnx_bytes() -> bytes:
    return double_onnx()


class LiveServer:
    """uvicorn serving ``create_app(settings)`` in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def start_server() -> Iterator[Callable[[Settings], LiveServer]]:
    servers: list[LiveServer] = []

    def start(s: Settings) -> LiveServer:
        servers.append(LiveServer(s).start())
        return servers[-1]

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def server(settings: Settings, start_server: Callable[[Settings], LiveServer]) -> LiveServer:
    return start_server(settings)


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


class ServerProcess:
    """``modelplane serve`` in a child process (for kill -9 and restart tests)."""

    def __init__(self, env: dict[str, str], port: int, proc: subprocess.Popen[bytes]) -> None:
        self.env, self.port, self.proc = env, port, proc
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn_server() -> Iterator[Callable[..., ServerProcess]]:
    procs: list[ServerProcess] = []

    def spawn(settings: Settings, *extra: str) -> ServerProcess:
        port = free_port()
        env = {**os.environ, "MODELPLANE_DATA_DIR": str(settings.data_dir)}
        if settings.database_url:
            env["MODELPLANE_DATABASE_URL"] = settings.database_url
        cmd = [
            sys.executable,
            "-m",
            "modelplane",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sp = ServerProcess(env, port, proc)
        procs.append(sp)
        sp.wait_ready()
        return sp

    yield spawn
    for sp in procs:
        if sp.proc.poll() is None:
            sp.proc.terminate()
            try:
                sp.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sp.kill()
