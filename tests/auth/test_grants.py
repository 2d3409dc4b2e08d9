"""Sharing: a deployment grant opens inference on ``<owner>~<name>``; a model grant lets the
grantee deploy ``<owner>~<model>``; revoking closes both again."""

from __future__ import annotations

import httpx
import pytest
import tritonclient.http as triton

from tests.auth.conftest import ROWS, Realm, bearer, deploy, publish_double, wait_for, wait_state

OIP_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0]}]}


@pytest.fixture
def shared(realm: Realm) -> dict[str, str]:
    for t in ("a", "b", "c"):
        realm.tenant(t)
    keys = {t: realm.key(t, "maintainer") for t in ("a", "b", "c")}
    with realm.client(keys["a"]) as api:
        publish_double(api)
        deploy(api, "double", "double@production")
    return keys


def _infer_codes(realm: Realm, key: str, name: str) -> list[int]:
    with httpx.Client(base_url=realm.url, headers=bearer(key), timeout=60) as c:
        return [
            c.post(f"/v2/models/{name}/infer", json=OIP_BODY).status_code,
            c.post(f"/v1/models/{name}:predict", json={"instances": ROWS}).status_code,
            c.get(f"/v2/models/{name}").status_code,
            c.get(f"/v1/models/{name}").status_code,
        ]


def test_deployment_grant_opens_inference_and_revoke_closes_it(
    realm: Realm, shared: dict[str, str]
) -> None:
    a = realm.client(shared["a"])
    assert _infer_codes(realm, shared["b"], "a~double") == [404] * 4
    r = a.post("/deployments/double/grants", json={"tenant": "b"})
    assert r.status_code == 201, r.text
    assert (r.json()["owner"], r.json()["grantee"], r.json()["kind"]) == ("a", "b", "deployment")
    assert _infer_codes(realm, shared["b"], "a~double") == [200] * 4
    assert _infer_codes(realm, shared["c"], "a~double") == [404] * 4  # only b
    with httpx.Client(base_url=realm.url, headers=bearer(shared["b"])) as c:
        r = c.post("/v2/models/a~double/infer", json=OIP_BODY)
        assert r.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
        r = c.post("/v1/models/a~double/labels/production:predict", json={"instances": ROWS})
        assert r.status_code == 200, r.text
        r = c.post("/v1/embeddings", json={"model": "a~double", "input": "x"})
        assert r.status_code == 400 and "not an embedding model" in r.text  # found, wrong kind
        # use, not management: the grantee cannot change, unload or re-share it
        for method, path in (
            ("GET", "/api/v1/deployments/a~double"),
            ("PATCH", "/api/v1/deployments/a~double"),
            ("DELETE", "/api/v1/deployments/a~double"),
            ("POST", "/api/v1/deployments/a~double/grants"),
            ("POST", "/v2/repository/models/a~double/unload"),
        ):
            r = c.request(method, path, json={"tenant": "c", "max_batch_size": 2})
            assert r.status_code in (404, 422), (method, path, r.status_code)
        got = c.get("/api/v1/grants").json()
        assert [(g["owner"], g["name"]) for g in got["received"]] == [("a", "double")]
        assert got["given"] == []
    with triton.InferenceServerClient(realm.url.removeprefix("http://")) as tc:
        meta = tc.get_model_metadata("a~double", headers=bearer(shared["b"]))
        assert meta["name"] == "double"
    listed = a.get("/deployments/double/grants").json()["grants"]
    assert [g["grantee"] for g in listed] == ["b"]
    assert a.delete("/deployments/double/grants/b").status_code == 204
    assert _infer_codes(realm, shared["b"], "a~double") == [404] * 4
    assert a.delete("/deployments/double/grants/b").status_code == 404
    assert a.get("/deployments/double").json()["state"] == "ready"
    a.close()


def test_model_grant_lets_the_grantee_deploy_it(realm: Realm, shared: dict[str, str]) -> None:
    a, b = realm.client(shared["a"]), realm.client(shared["b"])
    body = {"name": "mine", "model": "a~double@production"}
    r = b.post("/deployments", json=body)
    assert r.status_code == 404, r.text  # not shared yet: unknown
    assert a.post("/models/double/grants", json={"tenant": "b"}).status_code == 201
    assert b.post("/deployments", json=body).status_code == 201
    wait_state(b, "mine", "ready")
    assert _infer_codes(realm, shared["b"], "mine") == [200] * 4
    r = b.post("/deployments", json={"name": "pinned", "model": "a~double@1"})
    assert r.status_code == 201
    wait_state(b, "pinned", "ready")
    assert _infer_codes(realm, shared["c"], "mine") == [404] * 4  # b's deployment is b's
    assert b.get("/models/a~double").status_code in (404, 422)  # not the registry itself
    # revoking stops b's deployments of it within an alias poll
    assert a.delete("/models/double/grants/b").status_code == 204

    def failed(name: str) -> bool:
        return bool(b.get(f"/deployments/{name}").json()["state"] == "failed")

    assert wait_for(lambda: failed("mine") and failed("pinned"), 10)
    assert "not found" in b.get("/deployments/mine").json()["reason"]
    assert _infer_codes(realm, shared["b"], "mine")[0] == 503
    a.close()
    b.close()


def test_grant_errors(realm: Realm, shared: dict[str, str]) -> None:
    realm.tenant("a")
    with realm.client(shared["a"]) as a:
        assert a.post("/models/double/grants", json={"tenant": "a"}).status_code == 422
        assert a.post("/models/double/grants", json={"tenant": "Not Valid"}).status_code == 422
        assert a.post("/models/nosuch/grants", json={"tenant": "b"}).status_code == 404
        assert a.post("/deployments/nosuch/grants", json={"tenant": "b"}).status_code == 404
        assert a.post("/models/double/grants", json={}).status_code == 422
        assert a.post("/models/double/grants", json={"tenant": "b"}).status_code == 201
        assert a.post("/models/double/grants", json={"tenant": "b"}).status_code == 409
        # the grantee need not exist: creating a grant never reveals which tenants do
        assert a.post("/models/double/grants", json={"tenant": "ghost"}).status_code == 201
        assert a.delete("/models/double/grants/nobody").status_code == 404
    with realm.client(realm.key("a", "viewer")) as viewer:
        assert viewer.get("/models/double/grants").status_code == 200
        assert viewer.post("/models/double/grants", json={"tenant": "c"}).status_code == 403
        assert viewer.delete("/models/double/grants/b").status_code == 403
