"""``batch_predict`` over a model or deployment another tenant shared (``owner~name``):
allowed only while a grant says so, 404 (as for an unknown model) otherwise."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.auth.grants import Grants, granted
from modelplane.db import make_engine, upgrade
from modelplane.errors import NotFound
from modelplane.jobs.kinds.batch_predict import BatchPredictSpec, _source
from modelplane.serving.store import DeploymentStore
from tests.auth.conftest import Realm, deploy, publish_double, upload_dataset


def _wait_job(api: httpx.Client, job: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"/jobs/{job}").json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_batch_predict_on_shared_models_and_deployments(
    start_realm: Callable[..., Realm],
) -> None:
    realm = start_realm(job_slots=1, job_poll_seconds=0.1)
    for t in ("a", "b", "c"):
        realm.tenant(t)
    keys = {t: realm.key(t, "maintainer") for t in ("a", "b", "c")}
    with realm.client(keys["a"]) as a:
        publish_double(a)
        deploy(a, "serving", "double@production")
    by_model = {"kind": "batch_predict", "dataset": "rows", "model": "a~double@production"}
    by_deployment = {"kind": "batch_predict", "dataset": "rows", "deployment": "a~serving"}
    with realm.client(keys["b"]) as b, realm.client(keys["c"]) as c:
        for api in (b, c):
            assert upload_dataset(api, "rows").status_code == 201
        # not shared: the same 404 as a model or deployment that does not exist
        for body, words in ((by_model, "model 'a~double'"), (by_deployment, "a~serving")):
            r = b.post("/jobs", json=body)
            assert r.status_code == 404 and words in r.json()["error"], r.text
        r = b.post("/jobs", json={**by_model, "model": "a~nosuch@1"})
        assert r.status_code == 404 and "a~nosuch" in r.json()["error"], r.text
        with realm.client(keys["a"]) as a:
            assert a.post("/models/double/grants", json={"tenant": "b"}).status_code == 201
            assert a.post("/deployments/serving/grants", json={"tenant": "b"}).status_code == 201

        for body in (by_model, by_deployment):
            r = b.post("/jobs", json=body)
            assert r.status_code == 201, r.text
            job = _wait_job(b, r.json()["id"])
            assert job["state"] == "succeeded", job["error"]
            assert (job["result"]["model"], job["result"]["version"]) == ("a~double", 1)
            out = b.get(f"/jobs/{job['id']}/output")
            rows = [json.loads(line) for line in out.text.splitlines()]
            assert [r["y"] for r in rows] == [[2.0, 4.0, 6.0, 8.0], [10.0, 12.0, 14.0, 16.0]]
        # the grants were given to b only
        for body in (by_model, by_deployment):
            assert c.post("/jobs", json=body).status_code == 404
        # a's job list is a's: b's jobs over a's model are not shown there
        with realm.client(keys["a"]) as a:
            assert a.get("/jobs").json()["jobs"] == []


def test_a_job_process_checks_the_grant_again(tmp_path: Path) -> None:
    """Run time re-reads the grant from the database: one revoked after the submit stops it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    grants = Grants(engine, ttl=60)
    spec = BatchPredictSpec(dataset="rows", model="a~double@2")
    shared = partial(granted, engine)
    with pytest.raises(NotFound, match="a~double"):
        _source(spec, "b", DeploymentStore(engine), shared)
    grants.create("a", "model", "double", "b", "test")
    assert _source(spec, "b", DeploymentStore(engine), shared) == ("a", "double@2")
    grants.revoke("a", "model", "double", "b")
    with pytest.raises(NotFound, match="a~double"):
        _source(spec, "b", DeploymentStore(engine), shared)
    engine.dispose()
