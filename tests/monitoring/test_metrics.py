"""``/metrics`` on a live server: counters and histograms move by exactly the requests sent."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.monitoring.conftest import X, oip, scrape, serve_models

REQ = "modelplane_requests_total"
DUR = "modelplane_request_duration_seconds_count"
DOUBLE = {"tenant": "default", "deployment": "double", "version": "1"}


def test_oip_requests_move_every_series_by_exactly_the_calls_sent(
    served: LiveServer, http: httpx.Client
) -> None:
    before = scrape(http, served.url)
    n = 7
    assert [oip(http, served.url) for _ in range(n)] == [200] * n
    after = scrape(http, served.url)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    ok = {**DOUBLE, "protocol": "oip", "status": "200"}
    assert moved(REQ, **ok) == n
    assert moved(DUR, **ok) == n
    assert moved("modelplane_request_duration_seconds_bucket", **ok, le="+Inf") == n
    assert moved("modelplane_queue_wait_seconds_count", deployment="double") == n
    # Every row went through a batch exactly once; batches and model calls agree.
    assert moved("modelplane_batch_size_sum", deployment="double") == n * X.shape[0]
    batches = moved("modelplane_batch_size_count", deployment="double")
    assert 1 <= batches <= n
    assert moved("modelplane_inference_seconds_count", **DOUBLE) == batches
    assert moved("modelplane_inference_seconds_sum", **DOUBLE) > 0
    assert moved("modelplane_request_bytes_total", deployment="double") > 0
    assert moved("modelplane_response_bytes_total", deployment="double") > 0
    assert after.value("modelplane_queue_depth", deployment="double") == 0
    assert after.value("modelplane_deployment_ready", deployment="double") == 1


def test_tf_serving_requests_are_counted_under_their_protocol(
    served: LiveServer, http: httpx.Client
) -> None:
    before = scrape(http, served.url)
    body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
    codes = [http.post(f"{served.url}/v1/models/double:predict", json=body).status_code
             for _ in range(5)]  # fmt: skip
    after = scrape(http, served.url)
    assert codes == [200] * 5
    labels = {**DOUBLE, "protocol": "tfserving", "status": "200"}
    assert after.value(REQ, **labels) - before.value(REQ, **labels) == 5
    assert after.value(DUR, **labels) - before.value(DUR, **labels) == 5
    oip_ok = {**DOUBLE, "protocol": "oip"}
    assert after.value(REQ, **oip_ok) == before.value(REQ, **oip_ok)


def test_openai_embeddings_through_the_sdk_are_counted(
    served: LiveServer, http: httpx.Client
) -> None:
    before = scrape(http, served.url)
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    for _ in range(3):
        out = client.embeddings.create(model="embed", input=["one", "two"])
        assert len(out.data) == 2
    after = scrape(http, served.url)
    labels = {"protocol": "openai", "deployment": "embed", "version": "1", "status": "200"}
    assert after.value(REQ, **labels) - before.value(REQ, **labels) == 3
    rows = "modelplane_batch_size_sum"
    assert after.value(rows, deployment="embed") - before.value(rows, deployment="embed") == 6


def test_client_and_server_errors_carry_their_status(
    served: LiveServer, http: httpx.Client
) -> None:
    before = scrape(http, served.url)
    assert oip(http, served.url, x=np.ones((2, 3), np.float32)) == 400  # wrong shape
    assert oip(http, served.url, model="nope") == 404
    r = http.post(f"{served.url}/v2/repository/models/spare/unload")
    assert r.status_code == 200, r.text
    try:
        assert [oip(http, served.url, model="spare") for _ in range(2)] == [503, 503]
    finally:
        assert http.post(f"{served.url}/v2/repository/models/spare/load").status_code == 200
    after = scrape(http, served.url)

    def moved(**labels: str) -> float:
        return after.value(REQ, protocol="oip", **labels) - before.value(
            REQ, protocol="oip", **labels
        )

    assert moved(deployment="double", status="400") == 1
    # An unknown name gets no series of its own (any caller could invent names).
    assert moved(deployment="", status="404") == 1
    assert moved(deployment="nope") == 0
    assert moved(deployment="spare", status="503") == 2
    assert after.value("modelplane_deployment_ready", deployment="spare") == 1  # loaded again


def test_management_calls_are_counted_by_route_template(
    served: LiveServer, http: httpx.Client
) -> None:
    before = scrape(http, served.url)
    for name in ("double", "embed", "nope"):
        http.get(f"{served.url}/api/v1/models/{name}")
    after = scrape(http, served.url)
    mgmt = "modelplane_management_requests_total"
    route = {"method": "GET", "route": "/api/v1/models/{name}"}
    assert after.value(mgmt, **route, status="200") - before.value(mgmt, **route, status="200") == 2
    assert after.value(mgmt, **route, status="404") - before.value(mgmt, **route, status="404") == 1
    assert not any("/api/v1/models/double" in n for n in after.text.splitlines())
    ops = "modelplane_registry_operations_total"
    assert after.value(ops, status="200") - before.value(ops, status="200") == 2


def test_output_passes_promtool(served: LiveServer, http: httpx.Client) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool is not installed (Debian package 'prometheus')")
    oip(http, served.url)
    text = http.get(f"{served.url}/metrics").text
    for name in ("modelplane_requests_total", "modelplane_model_load_seconds_count",
                 "modelplane_jobs", "process_cpu_seconds_total"):  # fmt: skip
        assert name in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_metrics_need_a_key_unless_public(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer], http: httpx.Client
) -> None:
    key = "bootstrap-key-for-metrics-0123456789"
    closed = start_server(
        Settings(data_dir=tmp_path / "a", auth=True, bootstrap_key=key, job_slots=0)
    )
    assert http.get(f"{closed.url}/metrics").status_code == 401
    r = http.get(f"{closed.url}/metrics", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and "modelplane_requests_total" in r.text
    public = start_server(
        Settings(data_dir=tmp_path / "b", auth=True, bootstrap_key=key, metrics_public=True,
                 job_slots=0)
    )  # fmt: skip
    assert http.get(f"{public.url}/metrics").status_code == 200
    assert http.get(f"{public.url}/api/v1/models").status_code == 401


def test_each_app_counts_only_its_own_requests_and_metrics_can_be_off(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer], http: httpx.Client
) -> None:
    on = start_server(Settings(data_dir=tmp_path / "on", job_slots=0))
    off = start_server(Settings(data_dir=tmp_path / "off", job_slots=0, metrics=False))
    serve_models(on.url)
    serve_models(off.url)
    for url in (on.url, off.url):
        assert [oip(http, url) for _ in range(3)] == [200] * 3
    ok = {**DOUBLE, "protocol": "oip", "status": "200"}
    assert scrape(http, on.url).value(REQ, **ok) == 3  # not the module server's, not off's
    silent = scrape(http, off.url)
    assert silent.value(REQ) == 0
    assert silent.value("modelplane_batch_size_count") == 0
    assert silent.value("process_cpu_seconds_total") > 0  # process metrics stay
