"""Shared by the data-protection tests: keys, settings, and a few API calls."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from modelplane.settings import Settings

KEY_VARS = ("MODELPLANE_ENCRYPTION_KEY", "MODELPLANE_ENCRYPTION_KEYS")


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def make_settings(data_dir: Path, keys: str | None, **fields: Any) -> Settings:
    """Settings with exactly these keys, whatever the environment holds."""
    secret = SecretStr(keys) if keys else None
    return Settings(data_dir=data_dir, encryption_key=secret, encryption_keys=secret, **fields)


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env["MODELPLANE_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        env["MODELPLANE_DATABASE_URL"] = settings.database_url
    else:
        env.pop("MODELPLANE_DATABASE_URL", None)
    env.pop("MODELPLANE_STORE_URL", None)
    return {**env, **settings.secret_env()}


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``modelplane ARGS`` in a child process with the settings as environment."""
    return subprocess.run(
        [sys.executable, "-m", "modelplane", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=240,
    )


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api/v1", timeout=60)


def upload(
    c: httpx.Client, model: str, content: bytes, filename: str, fmt: str, **model_fields: Any
) -> dict[str, Any]:
    r = c.post("/models", json={"name": model, **model_fields})
    assert r.status_code in (201, 409), r.text
    r = c.post(
        f"/models/{model}/versions",
        files={"file": (filename, content, "application/octet-stream")},
        data={"format": fmt},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def settle(
    c: httpx.Client, name: str, until: tuple[str, ...] = ("ready", "failed"), timeout: float = 120
) -> dict[str, Any]:
    """Wait until the deployment is in one of the ``until`` states; returns its status."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/deployments/{name}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        done = body["state"] in until and (body["state"] != "ready" or body["workers"])
        if done or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def infer(url: str, model: str, rows: list[list[float]], name: str, dtype: str = "FP32") -> Any:
    body = {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows), len(rows[0])],
                "datatype": dtype,
                "data": [v for row in rows for v in row],
            }
        ]
    }
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return {o["name"]: o["data"] for o in r.json()["outputs"]}
