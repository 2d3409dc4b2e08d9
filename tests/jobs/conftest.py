"""Helpers for job tests: a server that runs jobs, a dataset, a model, a wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.settings import Settings
from tests.conftest import LiveServer


@pytest.fixture
def job_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", job_slots=1, job_poll_seconds=0.1)


@pytest.fixture
def job_api(
    job_settings: Settings, start_server: Callable[[Settings], LiveServer]
) -> Iterator[httpx.Client]:
    srv = start_server(job_settings)
    with httpx.Client(base_url=f"{srv.url}/api/v1", timeout=30) as c:
        yield c


def upload_csv(api: httpx.Client, name: str, text: str) -> None:
    r = api.post("/datasets", data={"name": name}, files={"file": (f"{name}.csv", text.encode())})
    assert r.status_code == 201, r.text


def upload_model(api: httpx.Client, name: str, onnx: bytes) -> None:
    assert api.post("/models", json={"name": name}).status_code == 201
    r = api.post(
        f"/models/{name}/versions", data={"format": "onnx"}, files={"file": ("m.onnx", onnx)}
    )
    assert r.status_code == 201, r.text


def wait_job(api: httpx.Client, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
