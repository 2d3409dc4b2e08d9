"""Deployments on a live server: the API, swaps, failed loads, crashes, scaling, restarts."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelplane.db import make_engine
from modelplane.examples import double_onnx
from modelplane.registry import SqlRegistryStore
from modelplane.registry.tables import DEFAULT_TENANT
from modelplane.settings import Settings
from tests.conftest import LiveServer, ServerProcess
from tests.serving.conftest import (
    Traffic,
    api_client,
    deploy,
    infer,
    move_alias,
    output,
    pid_alive,
    publish,
    status,
    wait_for,
    wait_ready,
    wait_until,
    worker_pids,
)
from tests.serving.models import (
    calibrated_slow_onnx,
    scalar_output_onnx,
    scale_onnx,
    unknown_op_onnx,
)

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture
def live(tmp_path: Path, start_server: Callable[[Settings], LiveServer]) -> LiveServer:
    return start_server(
        Settings(data_dir=tmp_path / "data", alias_poll_seconds=0.2, drain_seconds=10)
    )


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    with api_client(live.url) as c:
        yield c


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def answer(http: httpx.Client, model: str, x: np.ndarray = X) -> tuple[np.ndarray, str]:
    """(y, served version) of one infer call that must succeed."""
    r = infer(http, "", model, x)
    return output(r), r.json()["model_version"]


def all_gone(pids: list[int]) -> bool:
    return wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=30)


# -- the management API ------------------------------------------------------------------
def test_create_get_list_patch_and_delete(api: httpx.Client, http: httpx.Client) -> None:
    publish(api, "m", double_onnx(), alias="production")
    config = {
        "max_batch_size": 4,
        "max_batch_delay_ms": 1.5,
        "max_queue": 16,
        "timeout_ms": 5000,
        "instances": 1,
    }
    created = deploy(api, "d1", "m@production", **config)
    assert created["name"] == "d1"
    assert created["model"] == "m@production"
    assert created["state"] in ("loading", "ready")
    assert {k: created[k] for k in config} == config
    assert created["threads"] is None

    ready = wait_ready(api, "d1")
    assert (ready["version"], ready["format"], ready["reason"]) == (1, "onnx", None)
    assert ready["signature"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
    assert len(ready["workers"]) == 1
    assert ready["restarts"] == 0
    y, version = answer(http, "d1")
    np.testing.assert_array_equal(y, X * 2)
    assert version == "1"
    assert status(api, "d1")["batched_items"] >= 1

    listed = api.get("/deployments")
    assert listed.status_code == 200
    assert [d["name"] for d in listed.json()["deployments"]] == ["d1"]

    patched = api.patch("/deployments/d1", json={"max_queue": 32, "timeout_ms": 9000})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["max_queue"], patched.json()["timeout_ms"]) == (32, 9000)
    assert patched.json()["max_batch_size"] == 4  # untouched fields stay
    again = status(api, "d1")
    assert (again["max_queue"], again["timeout_ms"]) == (32, 9000)
    assert again["updated_at"] > again["created_at"]

    pids = worker_pids(again)
    r = api.delete("/deployments/d1")
    assert r.status_code == 204
    assert api.get("/deployments/d1").status_code == 404
    assert api.delete("/deployments/d1").status_code == 404
    assert api.get("/deployments").json()["deployments"] == []
    assert infer(http, "", "d1", X).status_code == 404
    assert all_gone(pids), "worker processes outlive their deployment"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server with model ``m`` (v1, alias production) and deployment ``taken``."""
    srv = LiveServer(Settings(data_dir=tmp_path_factory.mktemp("dep") / "data")).start()
    try:
        with api_client(srv.url) as c:
            publish(c, "m", double_onnx(), alias="production")
            deploy(c, "taken", "m@1")
            assert c.post("/models", json={"name": "empty"}).status_code == 201
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        pytest.param({"name": "d", "model": "ghost"}, 404, ["ghost"], id="unknown-model"),
        pytest.param(
            {"name": "d", "model": "ghost@production"}, 404, ["ghost"], id="unknown-model-alias"
        ),
        pytest.param({"name": "d", "model": "m@staging"}, 404, ["staging"], id="unknown-alias"),
        pytest.param({"name": "d", "model": "m@9"}, 404, ["9"], id="unknown-version"),
        pytest.param({"name": "d", "model": "empty"}, 404, ["empty"], id="model-without-versions"),
        pytest.param({"name": "d", "model": "m@"}, 422, ["nothing after"], id="empty-selector"),
        pytest.param({"name": "d", "model": "M!"}, 422, ["invalid"], id="bad-model-name"),
        pytest.param({"name": "Bad Name", "model": "m"}, 422, ["deployment name"], id="bad-name"),
        pytest.param({"name": "../d", "model": "m"}, 422, ["deployment name"], id="dotted-name"),
        pytest.param({"name": "", "model": "m"}, 422, ["deployment name"], id="empty-name"),
        pytest.param({"name": "taken", "model": "m"}, 409, ["taken", "exists"], id="duplicate"),
        pytest.param(
            {"name": "d", "model": "m", "colour": "red"}, 422, ["colour"], id="unknown-field"
        ),
        pytest.param({"model": "m"}, 422, ["name"], id="missing-name"),
        pytest.param({"name": "d"}, 422, ["model"], id="missing-model"),
        pytest.param(
            {"name": "d", "model": "m", "max_batch_size": 0}, 422, ["max_batch_size"], id="batch-0"
        ),
        pytest.param(
            {"name": "d", "model": "m", "instances": 65}, 422, ["instances"], id="instances-65"
        ),
        pytest.param(
            {"name": "d", "model": "m", "timeout_ms": 0}, 422, ["timeout_ms"], id="timeout-0"
        ),
        pytest.param(
            {"name": "d", "model": "m", "max_queue": "many"}, 422, ["max_queue"], id="queue-str"
        ),
        pytest.param(
            {"name": "d", "model": "m", "max_batch_delay_ms": -1},
            422,
            ["max_batch_delay_ms"],
            id="negative-delay",
        ),
    ],
)
def test_create_errors(shared: LiveServer, body: Any, code: int, words: list[str]) -> None:
    with api_client(shared.url) as api:
        r = api.post("/deployments", json=body)
        assert r.status_code == code, r.text
        message = r.json()["error"]
        for word in words:
            assert word in message, message
        if code != 409:
            assert api.get("/deployments/d").status_code == 404  # nothing was created


def test_malformed_json_is_400(shared: LiveServer) -> None:
    with api_client(shared.url) as api:
        r = api.post("/deployments", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert "JSON" in r.json()["error"]


@pytest.mark.parametrize(
    ("name", "body", "code", "words"),
    [
        pytest.param("ghost", {"max_queue": 3}, 404, ["ghost"], id="unknown-deployment"),
        pytest.param("taken", {"colour": "red"}, 422, ["colour"], id="unknown-field"),
        pytest.param("taken", {"max_batch_size": 0}, 422, ["max_batch_size"], id="bad-value"),
        pytest.param("taken", {"model": "ghost@1"}, 404, ["ghost"], id="unknown-model"),
        pytest.param("taken", {"model": "m@7"}, 404, ["7"], id="unknown-version"),
        pytest.param("taken", {"name": "other"}, 422, ["name"], id="rename"),
    ],
)
def test_patch_errors(
    shared: LiveServer, name: str, body: dict[str, Any], code: int, words: list[str]
) -> None:
    with api_client(shared.url) as api:
        before = status(api, "taken")
        r = api.patch(f"/deployments/{name}", json=body)
        assert r.status_code == code, r.text
        for word in words:
            assert word in r.json()["error"]
        after = status(api, "taken")
        assert after["model"] == before["model"]
        assert after["max_batch_size"] == before["max_batch_size"]


def test_get_and_delete_of_an_unknown_deployment_are_404(shared: LiveServer) -> None:
    with api_client(shared.url) as api:
        for r in (api.get("/deployments/ghost"), api.delete("/deployments/ghost")):
            assert r.status_code == 404
            assert "ghost" in r.json()["error"]


# -- following an alias ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "batch", "after"),
    [
        pytest.param(scale_onnx, 8, 20, id="fast-model"),
        # ~0.05 s a row, one row a batch: the old version still has a queue when the alias
        # moves, which it must drain, not drop.
        pytest.param(
            lambda k: calibrated_slow_onnx(0.05, k),
            1,
            5,
            id="slow-model-with-a-queue",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_alias_move_swaps_versions_with_zero_failed_requests(
    live: LiveServer, api: httpx.Client, make: Callable[[float], bytes], batch: int, after: int
) -> None:
    publish(api, "swap", make(2.0), alias="production")
    deploy(api, "swap", "swap@production", max_batch_size=batch, max_batch_delay_ms=1)
    old_pids = worker_pids(wait_ready(api, "swap", version=1))
    publish(api, "swap", make(3.0))  # v2 exists, but the alias still says 1
    assert status(api, "swap")["version"] == 1

    with Traffic(live.url, "swap", threads=4) as traffic:
        assert traffic.wait(lambda t: all(len(o) >= 5 for o in t.outcomes))
        move_alias(api, "swap", "production", 2)
        new = wait_ready(api, "swap", version=2)

        def enough_v2_answers(t: Traffic) -> bool:
            return all(sum(o.version == "2" for o in per) >= after for per in t.outcomes)

        assert traffic.wait(enough_v2_answers)

    outcomes = traffic.all()
    failed = [o for o in outcomes if o.status != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed, first {failed[:3]}"
    for per_thread in traffic.outcomes:
        versions = [o.version for o in per_thread]
        factors = [o.factor for o in per_thread]
        assert versions[0] == "1" and versions[-1] == "2"
        switch = versions.index("2")
        # Once a client got v2 it never sees v1 again; answers match their version.
        assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
        assert set(factors[:switch]) == {2.0} and set(factors[switch:]) == {3.0}
    assert set(worker_pids(new)).isdisjoint(old_pids)
    assert all_gone(old_pids), "the old version's workers were not stopped"


def test_a_deployment_of_latest_follows_new_uploads(api: httpx.Client, http: httpx.Client) -> None:
    publish(api, "latest", scale_onnx(2.0))
    deploy(api, "follow", "latest")
    wait_ready(api, "follow", version=1)
    publish(api, "latest", scale_onnx(3.0))
    wait_ready(api, "follow", version=2)
    y, version = answer(http, "follow")
    np.testing.assert_array_equal(y, X * 3)
    assert version == "2"


def test_an_alias_moved_by_another_process_is_noticed_by_polling(
    live: LiveServer, api: httpx.Client, http: httpx.Client
) -> None:
    publish(api, "polled", scale_onnx(2.0), alias="production")
    publish(api, "polled", scale_onnx(3.0))
    deploy(api, "polled", "polled@production")
    wait_ready(api, "polled", version=1)
    # Another server on the same database moves the alias: no notification reaches this one.
    engine = make_engine(live.settings.resolved_database_url())
    try:
        SqlRegistryStore(engine).set_alias(DEFAULT_TENANT, "polled", "production", 2, "elsewhere")
    finally:
        engine.dispose()
    wait_ready(api, "polled", version=2)
    np.testing.assert_array_equal(answer(http, "polled")[0], X * 3)


def test_a_new_version_that_fails_to_load_leaves_the_old_one_serving(
    api: httpx.Client, http: httpx.Client
) -> None:
    publish(api, "fragile", scale_onnx(2.0), alias="production")
    deploy(api, "fragile", "fragile@production")
    pids = worker_pids(wait_ready(api, "fragile", version=1))
    broken = publish(api, "fragile", unknown_op_onnx())  # onnx.checker accepts it
    move_alias(api, "fragile", "production", broken)

    s = wait_until(api, "fragile", lambda s: s["reason"] is not None)
    assert (s["state"], s["version"]) == ("ready", 1)
    assert "version 2 failed to load" in s["reason"]
    assert "Frobnicate" in s["reason"]
    assert "still serving version 1" in s["reason"]
    assert worker_pids(s) == pids
    y, version = answer(http, "fragile")
    np.testing.assert_array_equal(y, X * 2)
    assert version == "1"
    index = {m["name"]: m for m in http.post("/v2/repository/index").json()}
    assert index["fragile"]["state"] == "READY"
    assert "Frobnicate" in index["fragile"]["reason"]

    fixed = publish(api, "fragile", scale_onnx(3.0))
    move_alias(api, "fragile", "production", fixed)
    s = wait_ready(api, "fragile", version=3)
    assert s["reason"] is None
    np.testing.assert_array_equal(answer(http, "fragile")[0], X * 3)


def test_a_deployment_pinned_to_a_broken_version_fails_and_answers_503(
    api: httpx.Client, http: httpx.Client
) -> None:
    publish(api, "broken", unknown_op_onnx())
    deploy(api, "broken", "broken@1")
    s = wait_until(api, "broken", lambda s: s["state"] != "loading")
    assert s["state"] == "failed"
    assert s["version"] is None
    assert s["workers"] == []
    assert "version 1" in s["reason"]
    assert "Frobnicate" in s["reason"]

    r = infer(http, "", "broken", X)
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert "failed to load" in r.json()["error"]
    assert http.get("/v2/models/broken/ready").status_code == 503
    r = http.post("/v2/repository/models/broken/load")  # trying again fails the same way
    assert r.status_code == 400, r.text
    assert "Frobnicate" in r.json()["error"]

    # Pointing it at a good version recovers it.
    good = publish(api, "broken", scale_onnx(4.0))
    r = api.patch("/deployments/broken", json={"model": f"broken@{good}"})
    assert r.status_code == 200, r.text
    wait_until(api, "broken", lambda s: (s["state"], s["version"]) == ("ready", good))
    np.testing.assert_array_equal(answer(http, "broken")[0], X * 4)


def test_requests_that_happen_to_be_batched_succeed_as_they_would_alone(
    live: LiveServer, api: httpx.Client
) -> None:
    publish(api, "summed", scalar_output_onnx())
    deploy(api, "summed", "summed", max_batch_size=8, max_batch_delay_ms=1000)
    wait_ready(api, "summed")
    answers: list[httpx.Response] = []
    start = threading.Barrier(2)

    def one(value: float) -> None:
        with httpx.Client(timeout=60) as c:
            start.wait(timeout=30)
            answers.append(infer(c, live.url, "summed", np.full((1, 4), value, np.float32)))

    threads = [threading.Thread(target=one, args=(v,)) for v in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 2, "a request never came back"
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert sorted(float(np.ravel(r.json()["outputs"][0]["data"])[0]) for r in answers) == [4, 8]


# -- crashes -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_killed_worker_fails_only_its_in_flight_requests_and_is_restarted(
    live: LiveServer, api: httpx.Client, http: httpx.Client
) -> None:
    publish(api, "crashy", calibrated_slow_onnx())
    deploy(api, "crashy", "crashy", max_batch_size=1, max_queue=64, timeout_ms=120_000)
    (pid,) = worker_pids(wait_ready(api, "crashy"))

    with Traffic(live.url, "crashy", threads=3, request_timeout=30) as traffic:
        # Three clients keep the one worker busy: a request is always in flight.
        assert traffic.wait(lambda t: all(len(o) >= 1 for o in t.outcomes))
        os.kill(pid, signal.SIGKILL)
        restarted = wait_until(
            api, "crashy", lambda s: s["restarts"] >= 1 and worker_pids(s) not in ([], [pid])
        )
        assert traffic.wait(
            lambda t: all(sum(o.status == 200 for o in per[-3:]) == 3 for per in t.outcomes)
        )

    outcomes = traffic.all()
    assert {o.status for o in outcomes} <= {200, 503}, [o for o in outcomes if o.status != 200]
    refused = [o for o in outcomes if o.status == 503]
    assert refused, "the request in flight when the worker died should have failed"
    for o in refused:
        assert o.retry_after is not None and int(o.retry_after) >= 1
        assert "exited" in (o.error or "")
    assert all(o.factor == 2.0 for o in outcomes if o.status == 200)

    assert http.get("/healthz").status_code == 200
    (new_pid,) = worker_pids(restarted)
    assert new_pid != pid and pid_alive(new_pid)
    assert not pid_alive(pid)
    s = status(api, "crashy")
    assert (s["state"], s["restarts"]) == ("ready", 1)
    np.testing.assert_array_equal(answer(http, "crashy", X[:1])[0], X[:1] * 2)


def test_delete_stops_every_worker_process(api: httpx.Client, http: httpx.Client) -> None:
    publish(api, "gone", double_onnx())
    deploy(api, "gone", "gone", instances=2)
    pids = worker_pids(wait_ready(api, "gone"))
    assert len(set(pids)) == 2 and all(pid_alive(p) for p in pids)
    assert api.delete("/deployments/gone").status_code == 204
    assert all_gone(pids)
    assert infer(http, "", "gone", X).status_code == 404
    assert http.get("/v2/models/gone").status_code == 404


# -- changing a deployment live ----------------------------------------------------------------
def test_patch_max_batch_size_applies_live(api: httpx.Client, http: httpx.Client) -> None:
    publish(api, "elastic", double_onnx())
    deploy(api, "elastic", "elastic", max_batch_size=1)
    pids = worker_pids(wait_ready(api, "elastic"))
    x3 = np.ones((3, 4), np.float32)
    r = infer(http, "", "elastic", x3)
    assert r.status_code == 413, r.text
    assert "max_batch_size of 1" in r.json()["error"]

    assert api.patch("/deployments/elastic", json={"max_batch_size": 4}).status_code == 200
    np.testing.assert_array_equal(output(infer(http, "", "elastic", x3)), x3 * 2)
    assert http.get("/v2/models/elastic/config").json()["max_batch_size"] == 4
    assert worker_pids(status(api, "elastic")) == pids  # no reload was needed

    assert api.patch("/deployments/elastic", json={"max_batch_size": 2}).status_code == 200
    assert infer(http, "", "elastic", x3).status_code == 413


def test_patch_instances_scales_workers_without_failed_requests(
    live: LiveServer, api: httpx.Client
) -> None:
    publish(api, "scaled", double_onnx())
    deploy(api, "scaled", "scaled", max_batch_size=4)
    (first,) = worker_pids(wait_ready(api, "scaled"))

    with Traffic(live.url, "scaled", threads=3) as traffic:
        assert traffic.wait(lambda t: all(len(o) >= 5 for o in t.outcomes))
        r = api.patch("/deployments/scaled", json={"instances": 2})
        assert r.status_code == 200, r.text
        assert r.json()["instances"] == 2
        two = wait_until(api, "scaled", lambda s: len(worker_pids(s)) == 2)
        seen = sum(len(o) for o in traffic.outcomes)
        assert traffic.wait(lambda t: sum(len(o) for o in t.outcomes) >= seen + 30)

    assert [o for o in traffic.all() if o.status != 200] == []
    pids = worker_pids(two)
    assert len(set(pids)) == 2 and first not in pids
    assert two["version"] == 1
    assert all_gone([first])

    r = api.patch("/deployments/scaled", json={"instances": 1})
    assert r.status_code == 200, r.text
    (last,) = worker_pids(wait_until(api, "scaled", lambda s: len(s["workers"]) == 1))
    assert last not in pids
    assert all_gone(pids)


def test_several_deployments_share_one_server(api: httpx.Client, http: httpx.Client) -> None:
    publish(api, "two", scale_onnx(2.0))
    publish(api, "three", scale_onnx(3.0))
    deploy(api, "a", "two")
    deploy(api, "b", "three", max_batch_size=2)
    deploy(api, "a-again", "two@1", instances=2)
    for name in ("a", "b", "a-again"):
        wait_ready(api, name)
    names = [d["name"] for d in api.get("/deployments").json()["deployments"]]
    assert sorted(names) == ["a", "a-again", "b"]
    np.testing.assert_array_equal(answer(http, "a")[0], X * 2)
    np.testing.assert_array_equal(answer(http, "b")[0], X * 3)
    np.testing.assert_array_equal(answer(http, "a-again")[0], X * 2)
    pids = {n: worker_pids(status(api, n)) for n in ("a", "b", "a-again")}
    assert len({p for ps in pids.values() for p in ps}) == 4  # no worker is shared

    assert api.delete("/deployments/a").status_code == 204
    assert all_gone(pids["a"])
    np.testing.assert_array_equal(answer(http, "a-again")[0], X * 2)
    np.testing.assert_array_equal(answer(http, "b")[0], X * 3)
    assert all(pid_alive(p) for p in pids["b"] + pids["a-again"])


# -- restarts of the server ------------------------------------------------------------------
@pytest.mark.slow
def test_deployments_come_back_after_a_server_restart(
    settings: Settings, spawn_server: Callable[..., ServerProcess]
) -> None:
    first = spawn_server(settings)
    with api_client(first.url) as api, httpx.Client(timeout=60) as http:
        publish(api, "kept", scale_onnx(3.0), alias="production")
        deploy(api, "kept", "kept@production", max_batch_size=3, max_queue=7)
        old_pids = worker_pids(wait_ready(api, "kept"))
        np.testing.assert_array_equal(output(infer(http, first.url, "kept", X)), X * 3)
    first.proc.terminate()
    first.proc.wait(timeout=60)
    assert all_gone(old_pids), "workers outlive a server that was stopped"

    second = spawn_server(settings)
    with api_client(second.url) as api, httpx.Client(timeout=60) as http:
        names = [d["name"] for d in api.get("/deployments").json()["deployments"]]
        assert names == ["kept"]
        s = wait_ready(api, "kept", version=1)
        assert (s["model"], s["max_batch_size"], s["max_queue"]) == ("kept@production", 3, 7)
        np.testing.assert_array_equal(output(infer(http, second.url, "kept", X)), X * 3)


def test_workers_exit_when_their_server_is_killed(
    settings: Settings, spawn_server: Callable[..., ServerProcess]
) -> None:
    sp = spawn_server(settings)
    with api_client(sp.url) as api:
        publish(api, "orphan", double_onnx())
        deploy(api, "orphan", "orphan", instances=2)
        pids = worker_pids(wait_ready(api, "orphan"))
    sp.kill()  # SIGKILL: no shutdown code runs
    assert all_gone(pids), "workers outlive a killed server"
