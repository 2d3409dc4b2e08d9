"""Training jobs end to end: spec in, a registered version out, served over OIP."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

from modelplane.settings import Settings
from tests.jobs.conftest import upload_csv, wait_job


def iris_csv(site_column: bool = False) -> str:
    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [data.target_names[t] for t in data.target]
    frame = frame.drop(columns=["target"])
    if site_column:
        frame["site"] = [f"s{i % 3}" for i in range(len(frame))]
    return frame.to_csv(index=False)


TRAIN = {
    "kind": "train",
    "dataset": "iris",
    "model": {"architecture": "mlp", "hidden": [16]},
    "hyper": {"epochs": 40, "learning_rate": 0.05, "batch_size": 16, "optimizer": "adam"},
    "data": {"target": "species"},
    "output": {"model": "iris-mlp", "alias": "production",
               "alias_when": {"metric": "accuracy", "min": 0.8}},
}  # fmt: skip


def test_a_trained_model_is_registered_with_lineage_and_serves(job_api: httpx.Client) -> None:
    upload_csv(job_api, "iris", iris_csv())
    dataset = job_api.get("/datasets/iris").json()
    job = wait_job(job_api, job_api.post("/jobs", json=TRAIN).json()["id"], timeout=180)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["model"] == "iris-mlp" and job["result"]["alias"] == "production"
    assert 1 <= len(job["metrics"]) <= 40 and "epoch" in job["metrics"][0]
    version = job_api.get("/resolve/iris-mlp@production").json()
    assert version["metrics"]["accuracy"] >= 0.8 > version["metrics"].get("baseline_accuracy", 0.4)
    assert version["source"]["job_id"] == job["id"]
    assert version["source"]["datasets"] == {"iris": dataset["sha256"]}
    assert version["params"]["hyper"]["optimizer"] == "adam"
    assert {"model.onnx", "checkpoint.pt", "encoding.json"} <= set(version["artifact"]["files"])
    # Serve it and check the answers.
    deployment = {"name": "iris", "model": "iris-mlp@production", "max_batch_size": 256}
    r = job_api.post("/deployments", json=deployment)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 60
    while job_api.get("/deployments/iris").json()["state"] != "ready":
        assert time.monotonic() < deadline, job_api.get("/deployments/iris").json()
        time.sleep(0.2)
    sig = version["signature"]
    iris = load_iris()
    rows = iris.data.astype(np.float32)
    base = str(job_api.base_url).rstrip("/").removesuffix("/api/v1")
    body = {"inputs": [{"name": sig["inputs"][0]["name"], "shape": list(rows.shape),
                        "datatype": "FP32", "data": rows.ravel().tolist()}]}  # fmt: skip
    out = httpx.post(f"{base}/v2/models/iris/infer", json=body, timeout=30).json()
    assert "outputs" in out, out
    probs = next(o for o in out["outputs"] if o["name"] == "probabilities")
    predicted = np.asarray(probs["data"]).reshape(probs["shape"]).argmax(axis=1)
    classes = sorted(iris.target_names)  # the encoding orders class names
    labels = np.array([classes.index(iris.target_names[t]) for t in iris.target])
    assert (predicted == labels).mean() >= 0.8


def test_specs_that_cannot_run_are_refused_at_submit(job_api: httpx.Client) -> None:
    upload_csv(job_api, "iris", iris_csv())
    cases = [
        ({"hyper": {"optimizer": "nesterov"}}, 422, "optimizer"),
        ({"hyper": {"learning_rate": -0.1}}, 422, "learning_rate"),
        ({"data": {"target": "colour"}}, 422, "colour"),
        ({"dataset": "nope"}, 404, "nope"),
        ({"resources": {"workers": 9}}, 422, "workers"),
        ({"output": {"model": "Bad/Name"}}, 422, "output.model"),
        ({"model": {"architecture": "lstm"}}, 422, "architecture"),
    ]
    for change, status, words in cases:
        r = job_api.post("/jobs", json={**TRAIN, **change})
        assert r.status_code == status, (change, r.text)
        assert words in r.json()["error"], r.text
    assert job_api.get("/jobs").json()["jobs"] == []


def test_cancel_stops_a_running_training_promptly(job_api: httpx.Client) -> None:
    upload_csv(job_api, "iris", iris_csv())
    long = {**TRAIN, "hyper": {"epochs": 5000, "batch_size": 4}, "output": {"model": "never"}}
    job_id = job_api.post("/jobs", json=long).json()["id"]
    deadline = time.monotonic() + 60
    while not job_api.get(f"/jobs/{job_id}").json()["metrics"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    job_api.post(f"/jobs/{job_id}/cancel")
    job = wait_job(job_api, job_id, timeout=20)
    assert job["state"] == "cancelled"
    assert job_api.get("/models/never").status_code == 404  # nothing registered


def test_federated_averaging_over_sites(job_api: httpx.Client) -> None:
    upload_csv(job_api, "iris-sites", iris_csv(site_column=True))
    spec = {
        "kind": "federated_train", "dataset": "iris-sites", "partition_by": "site",
        "model": {"architecture": "mlp", "hidden": [16]},
        "hyper": {"learning_rate": 0.05, "batch_size": 16},
        "data": {"target": "species"}, "federated": {"rounds": 15, "local_epochs": 2},
        "output": {"model": "iris-fed"},
    }  # fmt: skip
    r = job_api.post("/jobs", json=spec)
    assert r.status_code == 201, r.text
    job = wait_job(job_api, r.json()["id"], timeout=180)
    assert job["state"] == "succeeded", job["error"]
    assert any(
        "3 participants" in line["line"]
        for line in job_api.get(f"/jobs/{job['id']}/logs").json()["lines"]
    )
    assert job["result"]["metrics"]["accuracy"] >= 0.7
    assert job_api.post("/jobs", json={**spec, "partition_by": "nope"}).status_code == 422


@pytest.mark.slow
def test_training_resumes_from_its_checkpoint_when_its_runner_dies(
    tmp_path: Path, spawn_server
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    env_extra = {"MODELPLANE_JOB_POLL_SECONDS": "0.2", "MODELPLANE_JOB_STALE_SECONDS": "3"}
    os.environ.update(env_extra)
    try:
        first = spawn_server(settings)
        api = httpx.Client(base_url=f"{first.url}/api/v1", timeout=30)
        upload_csv(api, "iris", iris_csv())
        spec = {**TRAIN, "hyper": {"epochs": 400, "batch_size": 4}, "output": {"model": "resumed"}}
        job_id = api.post("/jobs", json=spec).json()["id"]
        deadline = time.monotonic() + 90
        while len(api.get(f"/jobs/{job_id}").json()["metrics"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(first.proc.pid, signal.SIGKILL)  # the runner dies; its job process with it
        first.proc.wait(10)
        second = spawn_server(settings)
        api = httpx.Client(base_url=f"{second.url}/api/v1", timeout=30)
        deadline = time.monotonic() + 60
        while api.get(f"/jobs/{job_id}").json()["attempts"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        logs = ""
        while "resuming from the checkpoint" not in logs:
            assert time.monotonic() < deadline + 60
            logs = " ".join(
                line["line"] for line in api.get(f"/jobs/{job_id}/logs").json()["lines"]
            )
            time.sleep(0.2)
        api.post(f"/jobs/{job_id}/cancel")
        job = wait_job(api, job_id, timeout=30)
        epochs = [m["epoch"] for m in job["metrics"]]
        assert epochs == sorted(set(epochs)) and epochs[0] == 1  # continued, not restarted
    finally:
        for key in env_extra:
            os.environ.pop(key, None)
