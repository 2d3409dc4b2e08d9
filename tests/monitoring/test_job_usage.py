"""A job run through the server's runner is metered (CPU and wall seconds) and counted."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.jobs.conftest import upload_csv, upload_model, wait_job
from tests.monitoring.conftest import scrape

ROWS = "a,b,c,d\n" + "".join(f"{i},{i},{i},{i}\n" for i in range(20))


def test_a_finished_job_shows_its_cpu_time_in_usage_and_metrics(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer], onnx_bytes: bytes
) -> None:
    server = start_server(
        Settings(data_dir=tmp_path / "data", job_slots=1, job_poll_seconds=0.1,
                 price_per_compute_second=2.0)
    )  # fmt: skip
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api:
        upload_csv(api, "table", ROWS)
        upload_model(api, "double", onnx_bytes)
        spec = {"kind": "batch_predict", "dataset": "table", "model": "double@1",
                "features": ["a", "b", "c", "d"]}  # fmt: skip
        job = wait_job(api, api.post("/jobs", json=spec).json()["id"])
        assert job["state"] == "succeeded", job["error"]
        # The runner records the run when it reaps the job process, one poll after it ends.
        deadline = time.monotonic() + 30
        while True:
            rows = api.get("/usage", params={"group_by": "tenant,deployment"}).json()["rows"]
            jobs = [r for r in rows if r.get("jobs")]
            if jobs or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        (line,) = jobs
        assert line["deployment"] == "" and line["jobs"] == 1
        # A Python child that imported numpy and onnxruntime used real CPU time.
        assert line["job_cpu_seconds"] > 0 and line["job_wall_seconds"] > 0
        assert line["cost"] >= line["job_cpu_seconds"] * 2.0 - 1e-6
    with httpx.Client(timeout=30) as c:
        m = scrape(c, server.url)
    transitions = "modelplane_job_transitions_total"
    assert m.value(transitions, kind="batch_predict", state="running") == 1
    assert m.value(transitions, kind="batch_predict", state="succeeded") == 1
    assert m.value("modelplane_jobs", kind="batch_predict", state="succeeded") == 1
