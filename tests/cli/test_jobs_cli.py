"""`modelplane jobs …` and `modelplane worker`: jobs run by a separate worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.jobs.conftest import upload_csv, upload_model

ROWS = "id,a,b,c,d\n" + "".join(f"r{i},{i},{i},{i},{i}\n" for i in range(6))


@pytest.fixture
def idle_server(tmp_path: Path, start_server: Callable[[Settings], LiveServer]) -> LiveServer:
    return start_server(Settings(data_dir=tmp_path / "data", job_slots=0))


@pytest.fixture
def worker(idle_server: LiveServer) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "MODELPLANE_DATA_DIR": str(idle_server.settings.data_dir),
           "MODELPLANE_JOB_POLL_SECONDS": "0.1"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "modelplane", "worker", "--slots", "1"],
                            env=env, stderr=subprocess.PIPE)  # fmt: skip
    yield proc
    proc.terminate()
    proc.wait(15)


def cli(server: LiveServer, *args: str) -> str:
    result = CliRunner().invoke(app, ["--url", server.url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout  # progress bars go to stderr


def test_a_worker_process_runs_jobs_submitted_through_the_cli(
    idle_server: LiveServer, worker: subprocess.Popen[bytes], tmp_path: Path, onnx_bytes: bytes
) -> None:
    api = httpx.Client(base_url=f"{idle_server.url}/api/v1", timeout=30)
    upload_csv(api, "table", ROWS)
    upload_model(api, "double", onnx_bytes)
    spec = tmp_path / "score.yaml"
    spec.write_text(
        "kind: batch_predict\ndataset: table\nmodel: double@1\n"
        "features: [a, b, c, d]\nkeep: [id]\nchunk_size: 4\n"
    )
    out = cli(idle_server, "--json", "jobs", "submit", str(spec), "--wait")
    job = json.loads(out)
    assert job["state"] == "succeeded", job
    assert job["result"]["rows"] == 6
    listed = json.loads(cli(idle_server, "--json", "jobs", "list", "--state", "succeeded"))
    assert [j["id"] for j in listed] == [job["id"]]
    assert "succeeded" in cli(idle_server, "jobs", "show", job["id"])
    assert "6 rows in 2 chunk(s)" in cli(idle_server, "jobs", "logs", "-f", job["id"])
    assert worker.poll() is None  # the worker keeps going


def test_cli_refusals_and_cancel(idle_server: LiveServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: batch_predict\ndataset: nowhere\nmodel: m@1\n")
    result = subprocess.run(
        [sys.executable, "-m", "modelplane", "--url", idle_server.url, "jobs", "submit", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "404" in result.stderr
    notyaml = tmp_path / "list.yaml"
    notyaml.write_text("- just\n- a list\n")
    refused = CliRunner().invoke(app, ["--url", idle_server.url, "jobs", "submit", str(notyaml)])
    assert refused.exit_code != 0 and "mapping" in refused.output
    api = httpx.Client(base_url=f"{idle_server.url}/api/v1", timeout=30)
    upload_csv(api, "table", ROWS)
    spec = {"kind": "batch_predict", "dataset": "table", "model": "m@1"}
    assert api.post("/jobs", json=spec).status_code == 404  # no such model: refused
    api.post("/models", json={"name": "m"})
    assert api.post("/jobs", json=spec).status_code == 404  # no version yet
