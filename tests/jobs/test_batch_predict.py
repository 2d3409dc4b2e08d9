"""Jobs end to end: batch predictions through a real server and its job runner."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import httpx
import pandas as pd
from sqlalchemy import update

from modelplane.db import make_engine, utcnow
from modelplane.jobs.store import JobStore
from modelplane.jobs.tables import JobRow
from modelplane.settings import Settings
from modelplane.storage import BlobStore
from tests.jobs.conftest import upload_csv, upload_model, wait_job

ROWS = "id,a,b,c,d,label\n" + "".join(f"r{i},{i},{i + 1},{i + 2},{i + 3},x\n" for i in range(10))
SPEC = {"kind": "batch_predict", "dataset": "table", "model": "double@1",
        "features": ["a", "b", "c", "d"], "keep": ["id"], "chunk_size": 4}  # fmt: skip


def _setup(api: httpx.Client, onnx: bytes) -> None:
    upload_csv(api, "table", ROWS)
    upload_model(api, "double", onnx)


def test_batch_predict_writes_every_row_in_order_as_jsonl(
    job_api: httpx.Client, onnx_bytes: bytes
) -> None:
    _setup(job_api, onnx_bytes)
    r = job_api.post("/jobs", json={**SPEC, "name": "score the table"})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "queued"
    job = wait_job(job_api, r.json()["id"])
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["rows"] == 10 and job["result"]["version"] == 1
    assert [m["chunk"] for m in job["metrics"]] == [0, 1, 2]  # 4 + 4 + 2 rows
    out = job_api.get(f"/jobs/{job['id']}/output")
    assert out.status_code == 200
    assert out.headers["etag"].strip('"') == job["result"]["output"]["sha256"]
    rows = [json.loads(line) for line in out.text.splitlines()]
    assert [r["row"] for r in rows] == list(range(10))
    assert rows[3] == {"row": 3, "id": "r3", "y": [6.0, 8.0, 10.0, 12.0]}
    logs = job_api.get(f"/jobs/{job['id']}/logs").json()["lines"]
    assert any("10 rows in 3 chunk(s)" in line["line"] for line in logs)
    followed = job_api.get(f"/jobs/{job['id']}/logs", params={"follow": "true"})
    assert "10 rows in 3 chunk(s)" in followed.text  # a finished job's stream ends by itself


def test_batch_predict_to_parquet(job_api: httpx.Client, onnx_bytes: bytes) -> None:
    _setup(job_api, onnx_bytes)
    job = wait_job(
        job_api, job_api.post("/jobs", json={**SPEC, "output_format": "parquet"}).json()["id"]
    )
    assert job["state"] == "succeeded", job["error"]
    frame = pd.read_parquet(io.BytesIO(job_api.get(f"/jobs/{job['id']}/output").content))
    assert list(frame["id"]) == [f"r{i}" for i in range(10)]
    assert list(frame["y"][9]) == [18.0, 20.0, 22.0, 24.0]


def test_what_can_be_refused_is_refused_at_submit(job_api: httpx.Client, onnx_bytes: bytes) -> None:
    _setup(job_api, onnx_bytes)
    cases = [
        ({**SPEC, "dataset": "nope"}, 404, "dataset"),
        ({**SPEC, "model": "nope@1"}, 404, "model 'nope'"),
        ({**SPEC, "features": ["a", "zz"]}, 422, "zz"),
        ({**SPEC, "keep": ["missing"]}, 422, "missing"),
        ({**SPEC, "deployment": "d"}, 422, "exactly one of"),
        ({**SPEC, "chunk_size": 0}, 422, "chunk_size"),
        ({**SPEC, "bogus": 1}, 422, "bogus"),
        ({**SPEC, "kind": "dance"}, 422, "unknown job kind"),
        ({k: v for k, v in SPEC.items() if k != "kind"}, 422, "kind"),
    ]
    for body, status, words in cases:
        r = job_api.post("/jobs", json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["error"], r.text
    assert job_api.get("/jobs").json()["jobs"] == []  # nothing was queued


def test_unknown_job_and_output_of_unfinished_job(job_api: httpx.Client) -> None:
    assert job_api.get("/jobs/" + "0" * 32).status_code == 404
    assert job_api.post("/jobs/" + "0" * 32 + "/cancel").status_code == 404
    assert job_api.get("/jobs/not-a-job/logs").status_code == 404


def test_cancel_a_queued_job(tmp_path, start_server, onnx_bytes: bytes) -> None:
    srv = start_server(Settings(data_dir=tmp_path / "data", job_slots=0))  # runs nothing
    with httpx.Client(base_url=f"{srv.url}/api/v1", timeout=30) as api:
        _setup(api, onnx_bytes)
        job_id = api.post("/jobs", json=SPEC).json()["id"]
        assert api.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelled"
        assert api.post(f"/jobs/{job_id}/cancel").status_code == 409
        assert api.get(f"/jobs/{job_id}/output").status_code == 404
        assert [
            j["state"] for j in api.get("/jobs", params={"state": "cancelled"}).json()["jobs"]
        ] == ["cancelled"]


def test_a_job_whose_runner_died_resumes_without_redoing_finished_chunks(
    tmp_path, start_server, onnx_bytes: bytes
) -> None:
    data = tmp_path / "data"
    idle = start_server(Settings(data_dir=data, job_slots=0))
    with httpx.Client(base_url=f"{idle.url}/api/v1", timeout=30) as api:
        _setup(api, onnx_bytes)
        job_id = api.post("/jobs", json=SPEC).json()["id"]
    settings = Settings(data_dir=data)
    engine = make_engine(settings.resolved_database_url())
    store = JobStore(engine)
    # A runner takes the job, finishes chunk 0, and dies (its heartbeat goes stale).
    assert store.claim("dead-runner") is not None
    marker = b'{"row": 0, "id": "from-the-first-attempt"}\n'
    part = BlobStore(settings.resolved_store_path()).put_bytes(marker * 4)
    store.report(job_id, metrics={"chunk": 0, "rows": 4, "part": part})
    with engine.begin() as c:
        c.execute(update(JobRow).values(heartbeat_at=utcnow() - timedelta(minutes=10)))
    engine.dispose()
    live = start_server(
        Settings(data_dir=data, job_slots=1, job_poll_seconds=0.1, job_stale_seconds=5)
    )
    with httpx.Client(base_url=f"{live.url}/api/v1", timeout=30) as api:
        job = wait_job(api, job_id)
        assert job["state"] == "succeeded", job["error"]
        assert job["attempts"] == 2
        assert [m["chunk"] for m in job["metrics"]] == [0, 1, 2]  # chunk 0 not run again
        lines = api.get(f"/jobs/{job_id}/output").text.splitlines()
        assert lines[:4] == [marker.decode().strip()] * 4 and len(lines) == 10
