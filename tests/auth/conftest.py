"""Auth test helpers: a live server with auth on, tenants, keys of every role, a served model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.conftest import LiveServer

BOOTSTRAP = "bootstrap-key-for-tests-0123456789"
ROWS = [[1.0, 2.0, 3.0, 4.0]]
CSV = b"a,b,c,d\n1,2,3,4\n5,6,7,8\n"


def auth_settings(tmp_path: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "auth": True,
        "bootstrap_key": BOOTSTRAP,
        "job_slots": 0,  # jobs stay queued: tests look at them, nothing runs
        "alias_poll_seconds": 0.2,
        "auth_cache_seconds": 1.0,
        **extra,
    }
    return Settings(**values)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Realm:
    """A running server with auth on, and an admin client on it (the bootstrap key)."""

    server: LiveServer
    admin: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def tenant(self, name: str) -> str:
        r = self.admin.post("/api/v1/tenants", json={"name": name})
        assert r.status_code in (201, 409), r.text
        return name

    def key(self, tenant: str, role: str, name: str = "", **extra: Any) -> str:
        body = {"tenant": tenant, "role": role, "name": name or f"{tenant}-{role}", **extra}
        r = self.admin.post("/api/v1/keys", json=body)
        assert r.status_code == 201, r.text
        key: str = r.json()["key"]
        return key

    def client(self, key: str | None = None, api: bool = True) -> httpx.Client:
        base = f"{self.url}/api/v1" if api else self.url
        return httpx.Client(base_url=base, headers=bearer(key) if key else {}, timeout=60)


@pytest.fixture
def start_realm(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> Iterator[Callable[..., Realm]]:
    clients: list[httpx.Client] = []

    def start(**extra: Any) -> Realm:
        server = start_server(auth_settings(tmp_path, **extra))
        admin = httpx.Client(base_url=server.url, headers=bearer(BOOTSTRAP), timeout=60)
        clients.append(admin)
        return Realm(server, admin)

    yield start
    for c in clients:
        c.close()


@pytest.fixture
def realm(start_realm: Callable[..., Realm]) -> Realm:
    return start_realm()


def publish_double(api: httpx.Client, model: str = "double", alias: str = "production") -> None:
    """Register the y = 2x model as version 1 with ``alias``."""
    r = api.post("/models", json={"name": model})
    assert r.status_code == 201, r.text
    files = {"file": ("double.onnx", double_onnx(), "application/octet-stream")}
    r = api.post(f"/models/{model}/versions", files=files, data={"format": "onnx"})
    assert r.status_code == 201, r.text
    r = api.put(f"/models/{model}/aliases/{alias}", json={"version": 1})
    assert r.status_code == 200, r.text


def deploy(api: httpx.Client, name: str, model: str, wait: bool = True) -> dict[str, Any]:
    r = api.post("/deployments", json={"name": name, "model": model, "max_batch_delay_ms": 0})
    assert r.status_code == 201, r.text
    return wait_state(api, name, "ready") if wait else dict(r.json())


def wait_state(api: httpx.Client, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"/deployments/{name}").json()
        if body.get("state") == state:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def upload_dataset(api: httpx.Client, name: str, content: bytes = CSV) -> httpx.Response:
    files = {"file": (f"{name}.csv", content, "application/octet-stream")}
    return api.post("/datasets", files=files, data={"name": name})


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
