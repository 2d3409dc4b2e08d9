"""Keys end to end: shown once, stored as hashes, 401 for missing/bad/expired/revoked keys."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from modelplane.settings import Settings
from tests.auth.conftest import BOOTSTRAP, Realm, auth_settings, bearer, wait_for
from tests.conftest import LiveServer


def test_no_key_bad_key_and_public_routes(realm: Realm) -> None:
    with httpx.Client(base_url=realm.url) as anon:
        for path in ("/healthz", "/v2/health/live", "/v2/health/ready"):
            assert anon.get(path).status_code == 200, path
        r = anon.get("/api/v1/models")
        assert r.status_code == 401
        assert r.json() == {"error": "API key required"}
        assert r.headers["www-authenticate"] == 'Bearer realm="modelplane"'
        for headers in (
            bearer("mp_000000000000_nope"),
            bearer("garbage"),
            {"x-api-key": "mp_000000000000_nope"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
        ):
            r = anon.get("/api/v1/models", headers=headers)
            assert r.status_code == 401, headers
            assert "error" in r.json()
        assert (
            'error="invalid_token"'
            in anon.get("/api/v1/models", headers=bearer("garbage")).headers["www-authenticate"]
        )
        # inference and the OpenAPI document are closed too
        assert anon.post("/v2/models/x/infer", json={}).status_code == 401
        assert anon.post("/v1/models/x:predict", json={}).status_code == 401
        assert anon.get("/openapi.json").status_code == 401


def test_key_is_shown_once_and_stored_as_a_hash(realm: Realm, settings_db: Path) -> None:
    realm.tenant("acme")
    r = realm.admin.post(
        "/api/v1/keys", json={"tenant": "acme", "role": "user", "name": "ci", "expires": "30d"}
    )
    assert r.status_code == 201, r.text
    made = r.json()
    key = made["key"]
    assert key.startswith(f"mp_{made['prefix']}_")
    assert (made["tenant"], made["role"], made["name"]) == ("acme", "user", "ci")
    assert made["expires_at"] is not None
    listed = realm.admin.get("/api/v1/keys", params={"tenant": "acme"}).json()["keys"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert "key" not in listed[0]
    assert "key" not in realm.admin.get(f"/api/v1/keys/{made['id']}").json()
    with sqlite3.connect(settings_db) as db:
        rows = db.execute("select * from api_keys").fetchall()
    assert rows and not any(key in str(v) for row in rows for v in row)
    secret = key.split("_", 2)[2]
    assert not any(secret in str(v) for row in rows for v in row)
    # both header forms work; last_used_at is recorded
    with httpx.Client(base_url=realm.url) as c:
        assert c.get("/api/v1/models", headers=bearer(key)).status_code == 200
        assert c.get("/api/v1/models", headers={"x-api-key": key}).status_code == 200
    assert realm.admin.get(f"/api/v1/keys/{made['id']}").json()["last_used_at"] is not None


def test_revoked_key_is_refused_at_once(realm: Realm) -> None:
    realm.tenant("acme")
    key = realm.key("acme", "viewer")
    with realm.client(key) as c:
        assert c.get("/models").status_code == 200  # cached now
        key_id = realm.admin.get("/api/v1/keys").json()["keys"][-1]["id"]
        r = realm.admin.post(f"/api/v1/keys/{key_id}/revoke")
        assert r.status_code == 200 and r.json()["revoked_at"]
        assert c.get("/models").status_code == 401
    assert realm.admin.get("/api/v1/keys").json()["keys"] == []
    revoked = realm.admin.get("/api/v1/keys", params={"include_revoked": True}).json()["keys"]
    assert [k["id"] for k in revoked] == [key_id]
    again = realm.admin.post(f"/api/v1/keys/{key_id}/revoke").json()
    assert again["revoked_at"] == revoked[0]["revoked_at"]  # idempotent
    assert realm.admin.post("/api/v1/keys/999999/revoke").status_code == 404
    assert realm.admin.post("/api/v1/keys/abc/revoke").status_code == 422


def test_revocation_reaches_another_process_within_the_cache_ttl(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    """Two servers on one database: the one that did not revoke stops within ttl (1 s here)."""
    settings = auth_settings(tmp_path)
    one, two = start_server(settings), start_server(settings)
    admin = httpx.Client(base_url=one.url, headers=bearer(BOOTSTRAP))
    admin.post("/api/v1/tenants", json={"name": "acme"})
    made = admin.post("/api/v1/keys", json={"tenant": "acme", "role": "viewer"}).json()
    with httpx.Client(base_url=two.url, headers=bearer(made["key"])) as c:
        assert c.get("/api/v1/models").status_code == 200
        assert admin.post(f"/api/v1/keys/{made['id']}/revoke").status_code == 200
        started = time.monotonic()
        assert wait_for(lambda: c.get("/api/v1/models").status_code == 401, timeout=5)
        assert time.monotonic() - started < settings.auth_cache_seconds + 1.5
    admin.close()


def test_expired_key_is_refused(realm: Realm) -> None:
    realm.tenant("acme")
    key = realm.key("acme", "viewer", expires="1s")
    with realm.client(key) as c:
        assert c.get("/models").status_code == 200
        assert wait_for(lambda: c.get("/models").status_code == 401, timeout=5)


def test_bad_key_requests_are_clear_errors(realm: Realm) -> None:
    realm.tenant("acme")
    cases = [
        ({"tenant": "acme", "role": "root"}, 422),
        ({"tenant": "acme", "role": "user", "expires": "yesterday"}, 422),
        ({"tenant": "acme", "role": "user", "expires": "2001-01-01"}, 422),
        ({"tenant": "nosuch", "role": "user"}, 404),
        ({"tenant": "Bad Name", "role": "user"}, 422),
        ({"tenant": "acme", "role": "user", "extra": 1}, 422),
    ]
    for body, status in cases:
        r = realm.admin.post("/api/v1/keys", json=body)
        assert r.status_code == status, (body, r.text)
        assert "error" in r.json()


def test_tenants_api(realm: Realm) -> None:
    r = realm.admin.post("/api/v1/tenants", json={"name": "acme", "description": "ACME Inc."})
    assert r.status_code == 201 and r.json()["name"] == "acme"
    assert realm.admin.post("/api/v1/tenants", json={"name": "acme"}).status_code == 409
    assert realm.admin.post("/api/v1/tenants", json={"name": "a~b"}).status_code == 422
    names = [t["name"] for t in realm.admin.get("/api/v1/tenants").json()["tenants"]]
    assert names == ["acme", "default"]
    page = realm.admin.get("/api/v1/tenants", params={"limit": 1}).json()
    assert [t["name"] for t in page["tenants"]] == ["acme"] and page["next_page_token"]
    assert realm.admin.get("/api/v1/tenants/acme").json()["description"] == "ACME Inc."
    assert realm.admin.get("/api/v1/tenants/nosuch").status_code == 404


def test_bootstrap_key_is_admin_of_default(realm: Realm) -> None:
    r = realm.admin.post("/api/v1/models", json={"name": "boot"})
    assert r.status_code == 201
    assert r.json()["name"] == "boot"
    assert realm.admin.get("/api/v1/audit").status_code == 200
    realm.tenant("acme")
    with realm.client(realm.key("acme", "admin")) as other_admin:
        # an admin of another tenant manages the platform but sees only its own models
        assert other_admin.get("/tenants").status_code == 200
        assert other_admin.get("/models").json()["models"] == []


def test_short_bootstrap_key_is_refused(tmp_path: Path) -> None:
    from modelplane.app import create_app

    with pytest.raises(ValueError, match="at least 16"):
        create_app(auth_settings(tmp_path, bootstrap_key="short"))


@pytest.fixture
def settings_db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "modelplane.db"
