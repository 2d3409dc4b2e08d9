"""Two tenants are invisible to each other: 404 (never 403) on every protocol."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import tritonclient.http as triton

from tests.auth.conftest import ROWS, Realm, bearer, deploy, publish_double, upload_dataset

OIP_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0]}]}


@pytest.fixture
def two(realm: Realm) -> dict[str, Any]:
    """Tenant a owns model, versions, alias, deployment, dataset and a queued job; b nothing."""
    realm.tenant("a")
    realm.tenant("b")
    a_key, b_key = realm.key("a", "maintainer"), realm.key("b", "maintainer")
    with realm.client(a_key) as api:
        publish_double(api)
        deploy(api, "double", "double@production")
        assert upload_dataset(api, "rows").status_code == 201
        r = api.post("/jobs", json={"kind": "batch_predict", "dataset": "rows", "model": "double"})
        assert r.status_code == 201, r.text
        job = r.json()["id"]
    return {"a": a_key, "b": b_key, "job": job}


def test_management_routes_answer_404_to_another_tenant(realm: Realm, two: dict[str, Any]) -> None:
    job = two["job"]
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/models/double", {}),
        ("PATCH", "/models/double", {"json": {"description": "mine now"}}),
        ("DELETE", "/models/double", {}),
        ("GET", "/models/double/versions", {}),
        ("GET", "/models/double/versions/1", {}),
        ("GET", "/models/double/versions/production", {}),
        ("PATCH", "/models/double/versions/1", {"json": {"description": "x"}}),
        ("DELETE", "/models/double/versions/1", {}),
        ("GET", "/models/double/versions/1/artifact", {}),
        ("GET", "/models/double/versions/1/lineage", {}),
        ("POST", "/models/double/versions", {"files": {"file": ("m.onnx", b"x")}}),
        ("GET", "/resolve/double@1", {}),
        ("GET", "/models/double/aliases", {}),
        ("PUT", "/models/double/aliases/production", {"json": {"version": 1}}),
        ("DELETE", "/models/double/aliases/production", {}),
        ("GET", "/models/double/alias-history", {}),
        ("GET", "/models/double/grants", {}),
        ("POST", "/models/double/grants", {"json": {"tenant": "b"}}),
        ("GET", "/deployments/double", {}),
        ("PATCH", "/deployments/double", {"json": {"max_batch_size": 2}}),
        ("DELETE", "/deployments/double", {}),
        ("GET", "/deployments/double/grants", {}),
        ("POST", "/deployments/double/grants", {"json": {"tenant": "b"}}),
        ("GET", "/datasets/rows", {}),
        ("GET", "/datasets/rows/download", {}),
        ("DELETE", "/datasets/rows", {}),
        ("GET", f"/jobs/{job}", {}),
        ("GET", f"/jobs/{job}/logs", {}),
        ("GET", f"/jobs/{job}/output", {}),
        ("POST", f"/jobs/{job}/cancel", {}),
        (
            "POST",
            "/jobs",
            {"json": {"kind": "batch_predict", "dataset": "rows", "model": "double"}},
        ),
    ]
    with realm.client(two["b"]) as b:
        for method, path, kwargs in calls:
            r = b.request(method, path, **kwargs)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert b.get("/models").json()["models"] == []
        assert b.get("/deployments").json()["deployments"] == []
        assert b.get("/datasets").json()["datasets"] == []
        assert b.get("/jobs").json()["jobs"] == []
        # b may use the same names for its own things
        assert b.post("/models", json={"name": "double"}).status_code == 201
    with realm.client(two["a"]) as a:  # and a's things are untouched
        assert a.get("/models/double").json()["description"] == ""
        assert a.get("/deployments/double").json()["state"] == "ready"
        assert a.get(f"/jobs/{job}").json()["state"] == "queued"


def test_inference_protocols_answer_404_to_another_tenant(
    realm: Realm, two: dict[str, Any]
) -> None:
    with httpx.Client(base_url=realm.url, timeout=60) as c:
        a, b = bearer(two["a"]), bearer(two["b"])
        for method, path, body in (
            ("GET", "/v2/models/double", None),
            ("GET", "/v2/models/double/ready", None),
            ("GET", "/v2/models/double/config", None),
            ("POST", "/v2/models/double/infer", OIP_BODY),
            ("POST", "/v2/models/double/versions/1/infer", OIP_BODY),
            ("GET", "/v1/models/double", None),
            ("GET", "/v1/models/double/metadata", None),
            ("POST", "/v1/models/double:predict", {"instances": ROWS}),
            ("POST", "/v1/models/double/labels/production:predict", {"instances": ROWS}),
            ("POST", "/v2/repository/models/double/unload", None),
        ):
            assert c.request(method, path, json=body, headers=a).status_code in (200, 201), path
            r = c.request(method, path, json=body, headers=b)
            assert r.status_code == 404, (path, r.status_code, r.text)
        assert c.post("/v2/repository/index", headers=b).json() == []
        c.post("/v2/repository/models/double/load", headers=a)

    # OpenAI: a's deployment exists for a (it is just not an embedding model), not for b
    def embed(key: str) -> Exception:
        client = openai.OpenAI(base_url=f"{realm.url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.embeddings.create(model="double", input="hi")
        return caught.value

    a_err, b_err = embed(two["a"]), embed(two["b"])
    assert isinstance(a_err, openai.BadRequestError) and "not an embedding model" in str(a_err)
    assert isinstance(b_err, openai.NotFoundError) and "not found" in str(b_err)

    # tritonclient, with the key as a header on each call
    host = realm.url.removeprefix("http://")
    with triton.InferenceServerClient(host) as tc:
        assert tc.is_model_ready("double", headers=bearer(two["a"]))
        assert not tc.is_model_ready("double", headers=bearer(two["b"]))
        with pytest.raises(triton.InferenceServerException) as caught:
            tc.get_model_metadata("double", headers=bearer(two["b"]))
        assert "not found" in str(caught.value)
