"""Usage metering: additive flushes on SQLite and PostgreSQL, reports and cost, the API,
and what survives a restart (graceful: everything; kill -9: all but the last interval)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from modelplane.db import make_engine, upgrade
from modelplane.examples import double_onnx
from modelplane.monitoring.usage import UsageMeter
from modelplane.monitoring.usage_store import Prices
from modelplane.registry import SqlRegistryStore
from modelplane.schemas.registry import Artifact, NewVersion
from modelplane.settings import Settings
from tests.auth.conftest import Realm
from tests.conftest import LiveServer, ServerProcess
from tests.monitoring.conftest import X, oip
from tests.serving.conftest import api_client, deploy, publish, wait_ready

TODAY = datetime.now(UTC).date()


@pytest.fixture
def meter(db_url: str) -> Iterator[UsageMeter]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield UsageMeter(engine, flush_seconds=3600)
    engine.dispose()


def test_flushes_add_up_per_tenant_deployment_and_day(meter: UsageMeter) -> None:
    for _ in range(3):
        meter.record("acme", "a", items=2, compute_seconds=0.5, bytes_in=10, bytes_out=20)
    meter.record("acme", "b", items=1)
    meter.record_tokens("acme", "b", prompt_tokens=7, completion_tokens=11)
    assert meter.flush() == 2
    assert meter.flush() == 0  # nothing new: nothing written twice
    meter.record("acme", "a", items=4, compute_seconds=1.0)
    meter.record("zeta", "a")
    meter.flush()
    rows = meter.store.report(None, TODAY, TODAY, ["tenant", "deployment"], Prices())
    by = {(r["tenant"], r["deployment"]): r for r in rows}
    assert set(by) == {("acme", "a"), ("acme", "b"), ("zeta", "a")}
    a = by[("acme", "a")]
    assert (a["requests"], a["items"], a["bytes_in"], a["bytes_out"]) == (4, 10, 30, 60)
    assert a["compute_seconds"] == pytest.approx(2.5)
    b = by[("acme", "b")]
    assert (b["requests"], b["prompt_tokens"], b["completion_tokens"]) == (1, 7, 11)
    only = meter.store.report("zeta", TODAY, TODAY, ["tenant"], Prices())
    assert [(r["tenant"], r["requests"]) for r in only] == [("zeta", 1)]
    later = meter.store.report(None, TODAY + timedelta(days=1), TODAY + timedelta(days=2),
                               ["tenant"], Prices())  # fmt: skip
    assert later == []


def test_cost_from_prices_covers_requests_compute_jobs_and_storage(meter: UsageMeter) -> None:
    for _ in range(2000):
        meter.record("acme", "a", items=1, compute_seconds=0.01)
    meter.flush()
    meter.store.add_job("j" * 32, "acme", "train", cpu_seconds=4.0, wall_seconds=5.0)
    meter.store.add_job("j" * 32, "acme", "train", cpu_seconds=1.0, wall_seconds=2.0)  # resumed
    prices = Prices(per_1k_requests=0.5, per_compute_second=0.1, per_gb_month=3.0)
    rows = meter.store.report("acme", TODAY, TODAY, ["tenant", "deployment"], prices)
    by = {r["deployment"]: r for r in rows}
    assert by["a"]["cost"] == pytest.approx(2 * 0.5 + 20 * 0.1)
    jobs = by[""]
    assert (jobs["jobs"], jobs["job_cpu_seconds"], jobs["job_wall_seconds"]) == (1, 5.0, 7.0)
    assert jobs["cost"] == pytest.approx(5.0 * 0.1)
    (total,) = meter.store.report("acme", TODAY, TODAY, [], prices)
    assert total["cost"] == pytest.approx(1.0 + 2.0 + 0.5)


def test_stored_bytes_are_sampled_per_tenant_and_priced_per_gb_month(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    store = SqlRegistryStore(engine)
    size = 3_000_000
    for tenant, versions in (("acme", 2), ("zeta", 1)):
        store.create_model(tenant, "m", "", "", {})
        for i in range(versions):
            artifact = Artifact(sha256=f"{i:064x}", size=size, packaging="file", filename="m")
            store.create_version(tenant, "m", NewVersion(format="onnx", artifact=artifact), "a")
    meter = UsageMeter(engine)
    meter.sample_storage(force=True)
    meter.sample_storage(force=True)  # the same day again: replaced, not added
    prices = Prices(per_gb_month=30.0)
    rows = {r["tenant"]: r for r in meter.store.report(None, TODAY, TODAY, ["tenant"], prices)}
    assert rows["acme"]["stored_gb_months"] == pytest.approx(2 * size / 1e9 / 30)
    assert rows["acme"]["cost"] == pytest.approx(2 * size / 1e9)
    assert rows["zeta"]["cost"] == pytest.approx(size / 1e9)
    engine.dispose()


# -- through a live server ---------------------------------------------------------
@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("usage") / "data"
    server = LiveServer(Settings(data_dir=data, job_slots=0, price_per_1k_requests=2.0)).start()
    try:
        with api_client(server.url) as api:
            publish(api, "double", double_onnx())
            deploy(api, "double", "double")
            wait_ready(api, "double")
        yield server
    finally:
        server.stop()


def test_usage_api_reports_the_requests_sent(metered: LiveServer) -> None:
    with httpx.Client(base_url=metered.url, timeout=60) as c:
        assert [oip(c, metered.url) for _ in range(6)] == [200] * 6
        r = c.get("/api/v1/usage", params={"group_by": "deployment,day"})
        assert r.status_code == 200, r.text
        body = r.json()
        (row,) = [x for x in body["rows"] if x["deployment"] == "double"]
        assert row["day"] == TODAY.isoformat()
        assert (row["requests"], row["items"]) == (6, 6 * X.shape[0])
        assert row["compute_seconds"] > 0 and row["bytes_in"] > 0 and row["bytes_out"] > 0
        assert row["cost"] == pytest.approx(6 / 1000 * 2.0)
        assert body["prices"]["per_1k_requests"] == 2.0

        csv = c.get("/api/v1/usage", params={"group_by": "deployment", "format": "csv"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        header, *lines = csv.text.strip().splitlines()
        assert header.startswith("deployment,requests,items")
        assert any(line.startswith("double,6,12,") for line in lines)
        by_accept = c.get("/api/v1/usage", headers={"Accept": "text/csv"})
        assert by_accept.text.startswith("tenant,requests")

        assert c.get("/api/v1/usage", params={"group_by": "model"}).status_code == 422
        bad = c.get("/api/v1/usage", params={"from": "2026-12-05", "to": "2026-12-01"})
        assert bad.status_code == 422 and "error" in bad.json()
        assert c.get("/api/v1/usage", params={"from": "yesterday"}).status_code == 422


def test_a_tenant_sees_only_its_own_usage(start_realm: Callable[..., Realm]) -> None:
    realm = start_realm()
    realm.tenant("acme")
    user = realm.key("acme", "user")
    with realm.client(realm.key("acme", "maintainer")) as m:
        publish(m, "double", double_onnx())
        deploy(m, "double", "double")
        wait_ready(m, "double")
    with httpx.Client(headers={"Authorization": f"Bearer {user}"}, timeout=60) as c:
        assert [oip(c, realm.url) for _ in range(2)] == [200, 200]
        mine = c.get(f"{realm.url}/api/v1/usage").json()["rows"]
        assert [(r["tenant"], r["requests"]) for r in mine] == [("acme", 2)]
        other = c.get(f"{realm.url}/api/v1/usage", params={"tenant": "default"})
        assert other.status_code == 403
    every = realm.admin.get("/api/v1/usage").json()["rows"]
    assert ("acme", 2) in [(r["tenant"], r["requests"]) for r in every]


# -- restarts ------------------------------------------------------------------------
def _db_requests(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        rows = UsageMeter(engine).store.report(None, TODAY, TODAY, [], Prices())
    finally:
        engine.dispose()
    return int(rows[0]["requests"]) if rows else 0


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigterm", "kill-9"])
def test_usage_survives_a_restart(
    stop: str, db_url: str, tmp_path: Path, spawn_server: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # SIGTERM: no background flush would come for an hour, only the one at shutdown.
    monkeypatch.setenv("MODELPLANE_USAGE_FLUSH_SECONDS", "3600" if stop == "sigterm" else "0.2")
    monkeypatch.setenv("MODELPLANE_JOB_SLOTS", "0")
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url)
    first = spawn_server(settings)
    with api_client(first.url) as api:
        publish(api, "double", double_onnx())
        deploy(api, "double", "double")
        wait_ready(api, "double")
    with httpx.Client(timeout=60) as c:
        assert [oip(c, first.url) for _ in range(5)] == [200] * 5
    if stop == "sigterm":
        assert _db_requests(db_url) == 0  # still in memory
        first.proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down (lifespan included), then re-raises the signal it caught.
        assert first.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    else:
        deadline = time.monotonic() + 30
        while _db_requests(db_url) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)  # the background flush writes within one interval
        assert _db_requests(db_url) == 5
        first.kill()
    second = spawn_server(settings)
    with httpx.Client(base_url=second.url, timeout=60) as c:
        rows = c.get("/api/v1/usage", params={"group_by": "deployment"}).json()["rows"]
    assert [(r["deployment"], r["requests"]) for r in rows if r["requests"]] == [("double", 5)]


def test_sdk_and_cli_show_the_same_usage(metered: LiveServer) -> None:
    from typer.testing import CliRunner

    from modelplane import Client
    from modelplane.cli.main import app

    with httpx.Client(timeout=60) as c:
        assert oip(c, metered.url) == 200
    with Client(metered.url) as client:
        report = client.usage(group_by=["deployment"], start=TODAY, end=TODAY)
        (line,) = [r for r in report.rows if r.deployment == "double"]
        assert line.requests >= 1 and line.items == 2 * line.requests
        csv = client.usage_csv(group_by=["deployment"])
        assert csv.splitlines()[0].startswith("deployment,requests")
        assert client.ready()["checks"]["database"] == "ok"
    runner = CliRunner(env={"COLUMNS": "200"})
    shown = runner.invoke(app, ["--url", metered.url, "usage", "--group-by", "deployment"])
    assert shown.exit_code == 0, shown.output
    assert "double" in shown.output and "total cost" in shown.output
    as_json = runner.invoke(app, ["--url", metered.url, "--json", "usage", "--group-by", "day"])
    assert as_json.exit_code == 0, as_json.output
    assert '"day"' in as_json.output
    as_csv = runner.invoke(
        app, ["--url", metered.url, "usage", "--csv", "--group-by", "deployment"]
    )
    assert as_csv.output.startswith("deployment,requests")
    bad = runner.invoke(app, ["--url", metered.url, "usage", "--group-by", "model"])
    assert bad.exit_code != 0 and "tenant, deployment, day" in bad.output
