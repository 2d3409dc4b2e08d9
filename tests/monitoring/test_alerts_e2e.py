"""Alerts through a real server and a real webhook receiver on 127.0.0.1: induced latency or
errors fire a rule, the receiver is told once (after a retry when it first answers 500), and
once more when the cause goes away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.auth.conftest import deploy, publish_double, wait_state
from tests.conftest import LiveServer
from tests.monitoring.receiver import Receiver, receiver
from tests.serving.models import unknown_op_onnx

pytestmark = pytest.mark.slow
ROW = [1.0, 2.0, 3.0, 4.0]
OIP_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def settings_for(tmp_path: Path, hook: Receiver) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        job_slots=0,
        alert_interval_seconds=0.2,
        alert_webhook_urls=hook.url,
        alert_webhook_backoff_seconds=0.1,
        external_url="http://modelplane.example",
    )


@contextmanager
def traffic(url: str, path: str) -> Iterator[list[int]]:
    """Inference calls in a loop until the block ends; yields the statuses seen."""
    statuses: list[int] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                statuses.append(c.post(path, json=OIP_BODY).status_code)
                time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=30)


def statuses(bodies: list[dict[str, Any]], rule: str) -> list[str]:
    return [b["status"] for b in bodies if b["groupLabels"]["alertname"] == rule]


def settle(hook: Receiver, seconds: float = 1.5) -> list[dict[str, Any]]:
    """Several more evaluations pass; then what the receiver accepted."""
    time.sleep(seconds)
    with hook.lock:
        return list(hook.accepted)


def test_latency_alert_fires_once_and_resolves_once(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    with receiver([500]) as hook:
        server = start_server(settings_for(tmp_path, hook))
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api:
            publish_double(api)
            deploy(api, "dep", "double@production")
            # Any request is slower than 1 microsecond: the rule holds while traffic flows.
            rule = {
                "name": "SlowDep",
                "condition": {"kind": "latency", "above_ms": 0.001, "window": "2s"},
                "for": "400ms",
                "severity": "critical",
                "selector": {"deployment": "dep"},
                "annotations": {"summary": "p99 of {{ $labels.deployment }} is {{ $value }} ms"},
            }
            assert api.post("/alerts/rules", json=rule).status_code == 201
            with traffic(server.url, "/v2/models/dep/infer") as seen:
                hook.wait_for(lambda got: statuses(got, "SlowDep") == ["firing"])
                firing = api.get("/alerts", params={"state": "firing"}).json()["alerts"]
            assert seen and set(seen) == {200}
            [alert] = firing
            assert alert["labels"] == {"alertname": "SlowDep", "severity": "critical",
                                       "tenant": "default", "deployment": "dep"}  # fmt: skip
            assert alert["value"] > 0.001 and alert["fired_at"]
            assert alert["annotations"]["summary"].startswith("p99 of dep is ")
            # Traffic stopped: after the 2 s window the condition no longer holds.
            hook.wait_for(lambda got: statuses(got, "SlowDep") == ["firing", "resolved"])
            got = settle(hook)
            assert statuses(got, "SlowDep") == ["firing", "resolved"]  # exactly once each
            # The receiver answered 500 first: the firing message came again, then got through.
            assert [b["status"] for b in hook.bodies] == ["firing", "firing", "resolved"]
            fired, resolved = got
            assert fired["version"] == "4" and fired["externalURL"] == "http://modelplane.example"
            assert fired["groupKey"] == '{}:{alertname="SlowDep"}'
            [a] = fired["alerts"]
            assert a["endsAt"] == "0001-01-01T00:00:00Z" and a["labels"]["deployment"] == "dep"
            assert a["generatorURL"] == "http://modelplane.example/api/v1/alerts/rules/SlowDep"
            [r] = resolved["alerts"]
            assert r["status"] == "resolved" and r["fingerprint"] == a["fingerprint"]
            assert r["endsAt"] != "0001-01-01T00:00:00Z" and r["startsAt"] == a["startsAt"]
            listed = api.get("/alerts").json()["alerts"]
            assert [(x["rule"], x["state"]) for x in listed] == [("SlowDep", "resolved")]


def test_broken_deployment_fires_not_ready_and_errors_then_resolves(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    with receiver() as hook:
        server = start_server(settings_for(tmp_path, hook))
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api:
            assert api.post("/models", json={"name": "broken"}).status_code == 201
            files = {"file": ("m.onnx", unknown_op_onnx(), "application/octet-stream")}
            r = api.post("/models/broken/versions", files=files, data={"format": "onnx"})
            assert r.status_code == 201, r.text
            for rule in (
                {"name": "NotReady", "condition": {"kind": "deployment_not_ready"}},
                {"name": "Errors", "condition": {"kind": "error_ratio", "above": 0.5,
                                                 "window": "2s"}},
            ):  # fmt: skip
                assert api.post("/alerts/rules", json=rule).status_code == 201
            deploy(api, "bad", "broken", wait=False)
            wait_state(api, "bad", "failed")
            with traffic(server.url, "/v2/models/bad/infer") as seen:
                hook.wait_for(
                    lambda got: (
                        statuses(got, "NotReady") == ["firing"]
                        and statuses(got, "Errors") == ["firing"]
                    )
                )
            assert seen and all(s >= 500 for s in seen)
            # The cause goes away: no more failing calls, and the deployment is deleted.
            assert api.delete("/deployments/bad").status_code == 204
            hook.wait_for(
                lambda got: (
                    statuses(got, "NotReady") == ["firing", "resolved"]
                    and statuses(got, "Errors") == ["firing", "resolved"]
                )
            )
            got = settle(hook)
            assert statuses(got, "NotReady") == ["firing", "resolved"]
            assert statuses(got, "Errors") == ["firing", "resolved"]


def test_storage_quota_alert(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    """A tenant past 80 % of its stored-bytes quota fires; deleting the model resolves it."""
    with receiver() as hook:
        quota = int(len(double_onnx()) / 0.9)  # the model alone is 90 % of it
        s = settings_for(tmp_path, hook).model_copy(update={"quota_max_stored_bytes": quota})
        server = start_server(s)
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api:
            rule = {
                "name": "NearStorage",
                "condition": {"kind": "quota", "resource": "stored_bytes", "above_percent": 80},
            }
            assert api.post("/alerts/rules", json=rule).status_code == 201
            publish_double(api)
            [fired] = hook.wait_for(lambda got: statuses(got, "NearStorage") == ["firing"])
            [a] = fired["alerts"]
            assert a["labels"]["tenant"] == "default"
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'modelplane_tenant_stored_bytes{tenant="default"}' in metrics
            assert api.delete("/models/double").status_code == 204
            hook.wait_for(lambda got: statuses(got, "NearStorage") == ["firing", "resolved"])


def test_a_stuck_receiver_holds_up_neither_serving_nor_evaluation(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    with receiver() as hook:
        hook.release.clear()  # the receiver takes the webhook and does not answer
        server = start_server(settings_for(tmp_path, hook))
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api:
            publish_double(api)
            deploy(api, "dep", "double@production")
            rule = {"name": "Deep", "condition": {"kind": "latency", "above_ms": 0.001}}
            assert api.post("/alerts/rules", json=rule).status_code == 201
            infer = f"{server.url}/v2/models/dep/infer"
            assert httpx.post(infer, json=OIP_BODY, timeout=30).status_code == 200  # fires
            assert hook.waiting.wait(30)  # the firing webhook is in flight, unanswered
            first = api.get("/alerts").json()["evaluated_at"]
            assert httpx.post(infer, json=OIP_BODY, timeout=30).status_code == 200
            assert _wait(lambda: api.get("/alerts").json()["evaluated_at"] != first)
            assert api.get("/alerts").json()["alerts"][0]["state"] == "firing"
            assert hook.accepted == []
            hook.release.set()
            hook.wait_for(lambda got: statuses(got, "Deep") == ["firing"])


def _wait(check: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
