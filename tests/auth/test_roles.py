"""The role matrix across representative routes of every kind: allowed, or 403 (never 401)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from modelplane.schemas.auth import ROLES
from tests.auth.conftest import CSV, ROWS, Realm, bearer, deploy, publish_double

OIP_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROWS[0]}]}

# (method, path, keyword arguments for httpx, the least role allowed)
CALLS: list[tuple[str, str, dict[str, Any], str]] = [
    ("GET", "/api/v1/models", {}, "viewer"),
    ("GET", "/api/v1/deployments/double", {}, "viewer"),
    ("GET", "/v2/models/double", {}, "viewer"),
    ("GET", "/v1/models/double", {}, "viewer"),
    ("POST", "/v2/repository/index", {}, "viewer"),
    ("POST", "/v2/models/double/infer", {"json": OIP_BODY}, "user"),
    ("POST", "/v1/models/double:predict", {"json": {"instances": ROWS}}, "user"),
    ("POST", "/v1/embeddings", {"json": {"model": "double", "input": "hi"}}, "user"),
    ("POST", "/api/v1/models", {"json": {"name": "new-model"}}, "maintainer"),
    ("PATCH", "/api/v1/models/double", {"json": {"description": "d"}}, "maintainer"),
    (
        "POST",
        "/api/v1/datasets",
        {"files": {"file": ("t.csv", CSV)}, "data": {"name": "t"}},
        "maintainer",
    ),
    ("POST", "/api/v1/jobs", {"json": {"kind": "nosuch"}}, "maintainer"),
    ("POST", "/v2/repository/models/double/load", {}, "maintainer"),
    ("GET", "/api/v1/tenants", {}, "admin"),
    ("POST", "/api/v1/keys", {"json": {"tenant": "acme", "role": "viewer"}}, "admin"),
    ("GET", "/api/v1/audit", {}, "admin"),
    ("PUT", "/api/v1/tenants/acme/quotas", {"json": {}}, "admin"),
    ("GET", "/api/v1/keys", {}, "admin"),
]


def test_role_matrix(realm: Realm) -> None:
    realm.tenant("acme")
    keys = {role: realm.key("acme", role) for role in ROLES}
    with realm.client(keys["maintainer"]) as api:
        publish_double(api)
        deploy(api, "double", "double@production")
    problems = []
    with httpx.Client(base_url=realm.url, timeout=60) as c:
        for role in ROLES:
            for method, path, kwargs, least in CALLS:
                r = c.request(method, path, headers=bearer(keys[role]), **kwargs)
                allowed = ROLES.index(role) >= ROLES.index(least)
                if allowed and r.status_code in (401, 403):
                    problems.append(f"{role} {method} {path}: {r.status_code} {r.text}")
                if not allowed:
                    if r.status_code != 403:
                        problems.append(f"{role} {method} {path}: {r.status_code}, wanted 403")
                    elif path == "/v1/embeddings":
                        err = r.json()["error"]
                        assert err["code"] == "insufficient_permissions"
                        assert role in err["message"]
                    else:
                        assert role in r.json()["error"]
    assert not problems, "\n".join(problems)


def test_inference_works_for_user_role(realm: Realm) -> None:
    realm.tenant("acme")
    with realm.client(realm.key("acme", "maintainer")) as api:
        publish_double(api)
        deploy(api, "double", "double@production")
    with realm.client(realm.key("acme", "user"), api=False) as c:
        r = c.post("/v2/models/double/infer", json=OIP_BODY)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
        r = c.post("/v1/models/double:predict", json={"instances": ROWS})
        assert r.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}


def test_openai_errors_keep_openai_shape(realm: Realm) -> None:
    import openai

    realm.tenant("acme")
    for key, error in (
        ("mp_000000000000_wrong", openai.AuthenticationError),
        (realm.key("acme", "viewer"), openai.PermissionDeniedError),
    ):
        client = openai.OpenAI(base_url=f"{realm.url}/v1", api_key=key, max_retries=0)
        with pytest.raises(error) as caught:
            client.embeddings.create(model="double", input="hi")
        body = caught.value.body
        assert isinstance(body, dict) and body["message"] and body["type"], body
