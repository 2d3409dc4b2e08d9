"""Grants go with their resource: a model or deployment deleted and made again under the same
name is not shared with the tenants its predecessor was shared with."""

from __future__ import annotations

import httpx

from tests.auth.conftest import ROWS, Realm, bearer, deploy, publish_double, wait_state

OIP_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0]}]}


def _keys(realm: Realm) -> dict[str, str]:
    for t in ("a", "b"):
        realm.tenant(t)
    return {t: realm.key(t, "maintainer") for t in ("a", "b")}


def test_a_recreated_model_is_not_shared_by_its_old_grant(realm: Realm) -> None:
    keys = _keys(realm)
    with realm.client(keys["a"]) as a, realm.client(keys["b"]) as b:
        publish_double(a, "m")
        assert a.post("/models/m/grants", json={"tenant": "b"}).status_code == 201
        r = b.post("/deployments", json={"name": "theirs", "model": "a~m@production"})
        assert r.status_code == 201, r.text  # shared: b may deploy it
        assert b.delete("/deployments/theirs").status_code == 204

        assert a.delete("/models/m").status_code == 204
        assert realm.server.app.state.auth.grants.list_for("a", "model", "m") == []
        publish_double(a, "m")  # a new model that happens to reuse the name
        assert a.get("/models/m/grants").json()["grants"] == []
        r = b.post("/deployments", json={"name": "theirs", "model": "a~m@production"})
        assert r.status_code == 404, r.text
        assert b.get("/grants").json()["received"] == []


def test_a_grant_left_under_a_name_is_cleared_when_the_model_is_created(realm: Realm) -> None:
    """A row another process (or an older release) left behind does not share a new model."""
    keys = _keys(realm)
    grants = realm.server.app.state.auth.grants
    grants.create("a", "model", "later", "b", "test")
    with realm.client(keys["a"]) as a, realm.client(keys["b"]) as b:
        publish_double(a, "later")
        assert a.get("/models/later/grants").json()["grants"] == []
        r = b.post("/deployments", json={"name": "x", "model": "a~later@production"})
        assert r.status_code == 404, r.text
        # a failed create (the name is taken) leaves the grants of the existing model alone
        assert a.post("/models/later/grants", json={"tenant": "b"}).status_code == 201
        assert a.post("/models", json={"name": "later"}).status_code == 409
        assert [g["grantee"] for g in a.get("/models/later/grants").json()["grants"]] == ["b"]


def test_a_recreated_deployment_is_not_shared_by_its_old_grant(realm: Realm) -> None:
    keys = _keys(realm)
    with realm.client(keys["a"]) as a:
        publish_double(a)
        deploy(a, "dep", "double@production")
        assert a.post("/deployments/dep/grants", json={"tenant": "b"}).status_code == 201
    with httpx.Client(base_url=realm.url, headers=bearer(keys["b"]), timeout=60) as b:
        assert b.post("/v2/models/a~dep/infer", json=OIP_BODY).status_code == 200
        with realm.client(keys["a"]) as a:
            assert a.delete("/deployments/dep").status_code == 204
            assert b.post("/v2/models/a~dep/infer", json=OIP_BODY).status_code == 404
            deploy(a, "dep", "double@production")
            wait_state(a, "dep", "ready")
            assert a.get("/deployments/dep/grants").json()["grants"] == []
        for path, body in (
            ("/v2/models/a~dep/infer", OIP_BODY),
            ("/v1/models/a~dep:predict", {"instances": ROWS}),
        ):
            r = b.post(path, json=body)
            assert r.status_code == 404, (path, r.text)
