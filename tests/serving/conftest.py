"""Helpers for the serving tests: publish a model, deploy it, wait for it, call it."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

READY_TIMEOUT = 90.0


def api_client(url: str, timeout: float = 60) -> httpx.Client:
    """An httpx client whose paths start below /api/v1."""
    return httpx.Client(base_url=f"{url}/api/v1", timeout=timeout)


def publish(
    api: httpx.Client, model: str, content: bytes, alias: str | None = None, **model_fields: Any
) -> int:
    """Create ``model`` if needed, upload ``content`` as its next version; returns the number."""
    r = api.post("/models", json={"name": model, **model_fields})
    assert r.status_code in (201, 409), r.text
    r = api.post(
        f"/models/{model}/versions",
        files={"file": ("model.onnx", content, "application/octet-stream")},
        data={"format": "onnx"},
    )
    assert r.status_code == 201, r.text
    version = int(r.json()["version"])
    if alias is not None:
        move_alias(api, model, alias, version)
    return version


def move_alias(api: httpx.Client, model: str, alias: str, version: int) -> None:
    r = api.put(f"/models/{model}/aliases/{alias}", json={"version": version})
    assert r.status_code == 200, r.text


def deploy(api: httpx.Client, name: str, model: str, **config: Any) -> dict[str, Any]:
    r = api.post("/deployments", json={"name": name, "model": model, **config})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def status(api: httpx.Client, name: str) -> dict[str, Any]:
    r = api.get(f"/deployments/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_until(
    api: httpx.Client,
    name: str,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float = READY_TIMEOUT,
) -> dict[str, Any]:
    """Poll the deployment until ``condition(status)`` holds; fails with the last status."""
    deadline = time.monotonic() + timeout
    while True:
        current = status(api, name)
        if condition(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {name!r} never reached the condition: {current}")
        time.sleep(0.05)


def wait_ready(api: httpx.Client, name: str, version: int | None = None) -> dict[str, Any]:
    def ok(s: dict[str, Any]) -> bool:
        assert s["state"] != "failed", s
        return bool(
            s["state"] == "ready"
            and (version is None or s["version"] == version)
            and s["workers"]
            and all(w["alive"] for w in s["workers"])
        )

    return wait_until(api, name, ok)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def infer_body(x: np.ndarray, name: str = "x", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ],
        **extra,
    }


def infer(
    client: httpx.Client, url: str, model: str, x: np.ndarray, **kwargs: Any
) -> httpx.Response:
    """POST an OIP v2 JSON infer for ``x`` (float32) to ``{url}/v2/models/{model}/infer``."""
    return client.post(f"{url}/v2/models/{model}/infer", json=infer_body(x), **kwargs)


def output(r: httpx.Response, name: str = "y") -> np.ndarray:
    assert r.status_code == 200, r.text
    for out in r.json()["outputs"]:
        if out["name"] == name:
            return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    raise AssertionError(f"no output {name!r} in {r.text}")


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def worker_pids(s: dict[str, Any]) -> list[int]:
    return [int(w["pid"]) for w in s["workers"] if w["pid"] is not None]


@dataclass
class Outcome:
    """One request of a traffic loop."""

    thread: int
    status: int  # 0: no HTTP answer (timeout, connection error)
    factor: float | None = None  # y / x of the answer
    version: str | None = None  # model_version of the answer
    retry_after: str | None = None
    error: str | None = None


class Traffic:
    """A bounded closed loop of OIP infer calls from several threads (each its own client).

    Every thread sends one row, waits for the answer, and sends the next, until
    ``stop()``, ``max_per_thread`` requests, or ``max_seconds``.
    """

    def __init__(
        self,
        url: str,
        model: str,
        threads: int = 4,
        max_per_thread: int = 5000,
        max_seconds: float = 90.0,
        request_timeout: float = 60.0,
    ) -> None:
        self.url, self.model = url, model
        self.max_per_thread = max_per_thread
        self.max_seconds = max_seconds
        self.request_timeout = request_timeout
        self.outcomes: list[list[Outcome]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.request_timeout + 10)
        assert not any(t.is_alive() for t in self._threads), "a traffic thread hangs"

    def all(self) -> list[Outcome]:
        return [o for per_thread in self.outcomes for o in per_thread]

    def wait(self, condition: Callable[[Traffic], bool], timeout: float = 60.0) -> bool:
        """Wait until ``condition(self)`` holds (or the traffic is over, or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            if not any(t.is_alive() for t in self._threads):
                break
            time.sleep(0.02)
        return condition(self)

    def _run(self, index: int) -> None:
        out = self.outcomes[index]
        x = np.full((1, 4), index + 1, dtype=np.float32)
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=self.request_timeout) as client:
            while (
                not self._stop.is_set()
                and len(out) < self.max_per_thread
                and time.monotonic() < deadline
            ):
                try:
                    r = infer(client, self.url, self.model, x)
                except httpx.HTTPError as exc:
                    out.append(Outcome(index, 0, error=repr(exc)))
                    continue
                if r.status_code == 200:
                    body = r.json()
                    y = np.asarray(body["outputs"][0]["data"], dtype=np.float32)
                    out.append(Outcome(index, 200, float(y[0] / x[0, 0]), body["model_version"]))
                else:
                    error = r.json().get("error") if r.content.startswith(b"{") else r.text
                    out.append(
                        Outcome(index, r.status_code, retry_after=r.headers.get("retry-after"),
                                error=error)
                    )  # fmt: skip
