"""``/api/v1/alerts``: rule CRUD on SQLite and PostgreSQL, bad inputs, file rules, roles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.settings import Settings
from tests.auth.conftest import Realm, start_realm  # noqa: F401 (fixture)
from tests.conftest import LiveServer

RULE: dict[str, Any] = {
    "name": "SlowDouble",
    "condition": {"kind": "latency", "above_ms": 250, "window": "5m"},
    "for": "2m",
    "severity": "critical",
    "selector": {"deployment": "double"},
    "labels": {"team": "ml"},
    "annotations": {"summary": "p99 of {{ $labels.deployment }} is {{ $value }} ms"},
}
FILE_RULES = """
rules:
  - name: FromFile
    condition: {kind: deployment_not_ready}
    for: 1m
"""


def api(server: LiveServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30)


def test_rule_crud(
    tmp_path: Path, db_url: str, start_server: Callable[[Settings], LiveServer]
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(FILE_RULES)
    server = start_server(
        Settings(data_dir=tmp_path / "data", database_url=db_url, alert_rules_file=rules_file)
    )
    with api(server) as c:
        r = c.post("/alerts/rules", json=RULE)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["source"] == "api" and made["for"] == "2m" and made["created_at"]
        assert made["condition"] == {**RULE["condition"], "quantile": 0.99}
        listed = c.get("/alerts/rules").json()["rules"]
        assert [(x["name"], x["source"]) for x in listed] == [
            ("FromFile", "file"),
            ("SlowDouble", "api"),
        ]
        assert c.get("/alerts/rules/SlowDouble").json() == made
        changed = {**RULE, "condition": {"kind": "error_ratio", "above": 0.1}, "for": "0s"}
        r = c.put("/alerts/rules/SlowDouble", json=changed)
        assert r.status_code == 200, r.text
        assert r.json()["condition"]["kind"] == "error_ratio" and r.json()["for"] == "0s"
        assert c.get("/alerts/rules/SlowDouble").json()["condition"]["above"] == 0.1
        assert c.delete("/alerts/rules/SlowDouble").status_code == 204
        assert c.get("/alerts/rules/SlowDouble").status_code == 404
        assert c.delete("/alerts/rules/SlowDouble").status_code == 404
        # Rules from the file are read-only through the API.
        for r in (
            c.post("/alerts/rules", json={**RULE, "name": "FromFile"}),
            c.put("/alerts/rules/FromFile", json={**RULE, "name": "FromFile"}),
            c.delete("/alerts/rules/FromFile"),
        ):
            assert r.status_code == 409 and "rules file" in r.json()["error"]
        assert c.get("/alerts").json()["alerts"] == []


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"name": "bad name"}, 422, "invalid rule name"),
        ({"condition": {"kind": "latency"}}, 422, "above_ms"),
        ({"condition": {"kind": "latency", "above_ms": -1}}, 422, "above_ms"),
        ({"condition": {"kind": "warp"}}, 422, "kind"),
        ({"condition": {"kind": "latency", "above_ms": 5, "window": "forever"}}, 422, "window"),
        ({"for": "8d"}, 422, "at most 7d"),
        ({"severity": "urgent"}, 422, "severity"),
        ({"labels": {"severity": "x"}}, 422, "set by the rule"),
        ({"annotations": {"summary": "{{ range . }}"}}, 422, "templates"),
        ({"selector": {"tenant": "UPPER"}}, 422, "invalid tenant"),
        ({"selector": {"pod": "x"}}, 422, "selector.pod: Extra inputs"),
        ({"surprise": 1}, 422, "surprise: Extra inputs"),
    ],
)
def test_bad_rules_are_422(
    server: LiveServer, change: dict[str, Any], status: int, needle: str
) -> None:
    with api(server) as c:
        r = c.post("/alerts/rules", json={**RULE, **change})
        assert r.status_code == status, r.text
        assert needle in r.json()["error"]
        assert c.get("/alerts/rules").json()["rules"] == []


def test_other_client_errors(server: LiveServer) -> None:
    with api(server) as c:
        assert c.post("/alerts/rules", content=b"{nope", headers={
            "content-type": "application/json"}).status_code == 400  # fmt: skip
        assert c.post("/alerts/rules", json=RULE).status_code == 201
        r = c.post("/alerts/rules", json=RULE)
        assert r.status_code == 409 and "already exists" in r.json()["error"]
        r = c.put("/alerts/rules/SlowDouble", json={**RULE, "name": "Other"})
        assert r.status_code == 422 and "path" in r.json()["error"]
        assert c.put("/alerts/rules/Missing", json={**RULE, "name": "Missing"}).status_code == 404
        assert c.get("/alerts", params={"state": "sleeping"}).status_code == 422
        # Python's JSON reader takes NaN and Infinity: no threshold may be either.
        for number in (b"NaN", b"Infinity"):
            raw = b'{"name": "Q", "condition": {"kind": "queue_depth", "above": %s}}' % number
            r = c.post("/alerts/rules", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text


def test_bad_rules_file_stops_the_start(tmp_path: Path) -> None:
    from modelplane.app import create_app
    from modelplane.errors import InvalidInput

    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: X\n    condition: {kind: latency, above_ms: 0}\n")
    with pytest.raises(InvalidInput, match=r"rule X: condition\.latency\.above_ms"):
        create_app(Settings(data_dir=tmp_path / "data", alert_rules_file=path))
    with pytest.raises(ValueError, match="not an http"):
        create_app(Settings(data_dir=tmp_path / "data", alert_webhook_urls="ftp://x/"))


def test_roles(start_realm: Callable[..., Realm]) -> None:  # noqa: F811
    """Admins write; other roles read only their own tenant's rules and alerts."""
    realm = start_realm(alert_interval_seconds=0.1)
    realm.tenant("acme")
    realm.tenant("beta")
    keys = {role: realm.key("acme", role) for role in ("viewer", "user", "maintainer")}
    keys["admin"] = realm.key("acme", "admin")
    with realm.client() as anon:
        assert anon.get("/alerts").status_code == 401
        assert anon.get("/alerts/rules").status_code == 401
    for role in ("viewer", "user", "maintainer"):
        with realm.client(keys[role]) as c:
            r = c.post("/alerts/rules", json=RULE)
            assert r.status_code == 403, (role, r.text)
            assert c.delete("/alerts/rules/SlowDouble").status_code == 403
    with realm.client(keys["admin"]) as admin:
        acme = {
            **RULE,
            "name": "AcmeQueue",
            "condition": {"kind": "queue_depth", "above": 5},
            "selector": {"tenant": "acme"},
            "for": "0s",
        }
        beta = {**acme, "name": "BetaQueue", "selector": {"tenant": "beta"}}
        for body in (RULE, acme, beta):
            assert admin.post("/alerts/rules", json=body).status_code == 201
        assert len(admin.get("/alerts/rules").json()["rules"]) == 3
    with realm.client(keys["viewer"]) as viewer:
        assert [r["name"] for r in viewer.get("/alerts/rules").json()["rules"]] == ["AcmeQueue"]
        assert viewer.get("/alerts/rules/AcmeQueue").status_code == 200
        assert viewer.get("/alerts/rules/BetaQueue").status_code == 404  # not revealed
        assert viewer.get("/alerts/rules/SlowDouble").status_code == 404
        assert viewer.get("/alerts").status_code == 200
        exported = viewer.get("/alerts/export")
        assert exported.status_code == 200 and "AcmeQueue" in exported.text
        assert "BetaQueue" not in exported.text and "beta" not in exported.text
    # Alerts are filtered by their tenant label.
    evaluator = realm.server.app.state.alerts
    evaluator.sample = lambda: {
        "modelplane_queue_depth": {
            (("deployment", "d"), ("tenant", "acme")): 9.0,
            (("deployment", "d"), ("tenant", "beta")): 9.0,
        }
    }
    with realm.client(keys["admin"]) as admin:
        deadline_ok = _wait(lambda: len(admin.get("/alerts").json()["alerts"]) == 2)
        assert deadline_ok, admin.get("/alerts").json()
    with realm.client(keys["viewer"]) as viewer:
        seen = viewer.get("/alerts", params={"state": "firing"}).json()["alerts"]
        assert [(a["rule"], a["labels"]["tenant"]) for a in seen] == [("AcmeQueue", "acme")]


def _wait(check: Callable[[], bool], timeout: float = 20) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
