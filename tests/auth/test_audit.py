"""The audit log: a row per mutating call (after its status is known), none for reads or
inference, filters and pages, admin only, and no way to change it over HTTP."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from modelplane.settings import Settings
from tests.auth.conftest import ROWS, Realm, auth_settings, bearer, deploy, publish_double, wait_for
from tests.conftest import LiveServer


def entries(realm: Realm, **params: Any) -> list[dict[str, Any]]:
    r = realm.admin.get("/api/v1/audit", params=params)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["entries"]
    return found


def test_mutations_are_audited_reads_and_inference_are_not(realm: Realm) -> None:
    realm.tenant("acme")
    key = realm.key("acme", "maintainer", "deployer")
    with realm.client(key) as api:
        publish_double(api)  # POST model, POST version, PUT alias
        deploy(api, "double", "double@1")  # POST deployment (+ many GETs while waiting)
        assert api.delete("/models/nosuch").status_code == 404
        api.get("/models")
        api.get("/models/double/versions/1/artifact")
    with realm.client(key, api=False) as c:
        assert c.post("/v1/models/double:predict", json={"instances": ROWS}).status_code == 200
        assert c.post("/v2/repository/index").status_code == 200
    with realm.client(realm.key("acme", "viewer", "looker")) as viewer:
        assert viewer.post("/models", json={"name": "nope"}).status_code == 403
    with httpx.Client(base_url=realm.url) as anon:
        assert anon.post("/api/v1/models", json={"name": "x"}).status_code == 401

    def mine() -> list[dict[str, Any]]:
        return entries(realm, tenant="acme")

    assert wait_for(lambda: len(mine()) == 6)
    got = [(e["actor"], e["action"], e["target"], e["status"]) for e in reversed(mine())]
    assert got == [
        ("deployer", "POST /api/v1/models", "/api/v1/models", 201),
        ("deployer", "POST /api/v1/models/{name}/versions", "/api/v1/models/double/versions", 201),
        (
            "deployer",
            "PUT /api/v1/models/{name}/aliases/{alias}",
            "/api/v1/models/double/aliases/production",
            200,
        ),
        ("deployer", "POST /api/v1/deployments", "/api/v1/deployments", 201),
        ("deployer", "DELETE /api/v1/models/{name}", "/api/v1/models/nosuch", 404),
        ("looker", "POST /api/v1/models", "/api/v1/models", 403),
    ]
    first = mine()[-1]
    assert first["client"] == "127.0.0.1" and first["tenant"] == "acme" and first["key_id"]
    at = datetime.fromisoformat(first["at"])
    assert abs(at - datetime.now(UTC)) < timedelta(minutes=1)
    # the admin's own calls (tenant, keys) are in the log too
    admin_actions = [e["action"] for e in entries(realm, actor="bootstrap")]
    assert "POST /api/v1/tenants" in admin_actions and "POST /api/v1/keys" in admin_actions
    assert not any(a.startswith("GET") for a in admin_actions)


def test_filters_and_pages(realm: Realm) -> None:
    realm.tenant("acme")
    with realm.client(realm.key("acme", "maintainer", "m")) as api:
        for i in range(5):
            api.post("/models", json={"name": f"m{i}"})
        api.delete("/models/m0")
    assert wait_for(lambda: len(entries(realm, tenant="acme")) == 6)
    assert len(entries(realm, action="DELETE")) == 1
    assert len(entries(realm, action="POST /api/v1/models")) == 5
    assert len(entries(realm, actor="m")) == 6 and entries(realm, actor="nobody") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert entries(realm, since=future) == []
    assert len(entries(realm, tenant="acme", until=future)) == 6
    seen, token = [], None
    while True:
        params: dict[str, Any] = {"tenant": "acme", "limit": 4}
        if token:
            params["page_token"] = token
        body = realm.admin.get("/api/v1/audit", params=params).json()
        seen += [e["id"] for e in body["entries"]]
        token = body["next_page_token"]
        if not token:
            break
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)
    assert realm.admin.get("/api/v1/audit", params={"page_token": "!!"}).status_code == 400
    assert realm.admin.get("/api/v1/audit", params={"since": "tuesday"}).status_code == 422


def test_audit_is_admin_only_and_not_editable(realm: Realm) -> None:
    realm.tenant("acme")
    realm.admin.post("/api/v1/models", json={"name": "x"})
    assert wait_for(lambda: len(entries(realm)) >= 1)
    before = entries(realm)
    with realm.client(realm.key("acme", "maintainer")) as m:
        assert m.get("/audit").status_code == 403
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = realm.admin.request(method, "/api/v1/audit", json={})
        assert r.status_code == 405, (method, r.status_code)
        r = realm.admin.request(method, f"/api/v1/audit/{before[0]['id']}", json={})
        assert r.status_code in (404, 405), (method, r.status_code)
    after = [e for e in entries(realm) if e["id"] <= before[0]["id"]]
    assert after == before


def test_queued_rows_are_flushed_on_shutdown(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    from tests.auth.conftest import BOOTSTRAP

    settings = auth_settings(tmp_path)
    server = start_server(settings)
    with httpx.Client(base_url=server.url, headers=bearer(BOOTSTRAP)) as admin:
        for i in range(50):
            admin.post("/api/v1/models", json={"name": f"m{i}"})
    server.stop()
    with sqlite3.connect(settings.data_dir / "modelplane.db") as db:
        count = db.execute(
            "select count(*) from audit_log where action = 'POST /api/v1/models'"
        ).fetchone()[0]
    assert count == 50
