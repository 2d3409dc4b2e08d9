"""Quotas and rate limits (in memory): 429 with Retry-After and a JSON error once passed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.auth.conftest import CSV, Realm, bearer, publish_double, upload_dataset, wait_for


def test_quota_api(realm: Realm) -> None:
    realm.tenant("acme")
    r = realm.admin.get("/api/v1/tenants/acme/quotas")
    assert r.status_code == 200
    assert r.json()["requests_per_second"] == 0 and r.json()["configured"]["burst"] is None
    r = realm.admin.put(
        "/api/v1/tenants/acme/quotas", json={"requests_per_second": 5, "max_jobs": 2}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["requests_per_second"], body["burst"], body["max_jobs"]) == (5, 5, 2)
    assert body["configured"]["max_concurrent"] is None
    for bad in ({"burst": -1}, {"max_jobs": "many"}, {"unknown": 1}):
        assert realm.admin.put("/api/v1/tenants/acme/quotas", json=bad).status_code == 422
    assert realm.admin.put("/api/v1/tenants/nosuch/quotas", json={}).status_code == 404
    assert realm.admin.get("/api/v1/tenants/nosuch/quotas").status_code == 404
    with realm.client(realm.key("acme", "maintainer")) as m:
        assert m.put("/tenants/acme/quotas", json={"max_jobs": 100}).status_code == 403


def test_tenant_and_key_rates(realm: Realm) -> None:
    realm.tenant("acme")
    realm.tenant("other")
    one, two = realm.key("acme", "user", "one"), realm.key("acme", "user", "two")
    calm = realm.key("other", "viewer")
    realm.admin.put(
        "/api/v1/tenants/acme/quotas",
        json={"requests_per_second": 2, "burst": 6, "key_requests_per_second": 1, "key_burst": 4},
    )
    with httpx.Client(base_url=realm.url) as c:
        codes = [c.get("/api/v1/models", headers=bearer(one)).status_code for _ in range(6)]
        assert codes == [200] * 4 + [429] * 2  # key burst 4
        r = c.get("/api/v1/models", headers=bearer(one))
        assert r.status_code == 429 and "rate limit of key" in r.json()["error"]
        assert 1 <= int(r.headers["retry-after"]) <= 4
        # a key refused by its own limit did not use the tenant's burst: 2 of 6 are left
        codes = [c.get("/api/v1/models", headers=bearer(two)).status_code for _ in range(2)]
        assert codes == [200, 200]
        r = c.get("/api/v1/models", headers=bearer(two))
        assert r.status_code == 429
        assert "rate limit of tenant" in r.json()["error"] and r.headers["retry-after"]
        # OpenAI routes answer in OpenAI's shape
        r = c.post("/v1/embeddings", headers=bearer(two), json={"model": "m", "input": "x"})
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        # other tenants are not affected; public routes are never limited
        assert c.get("/api/v1/models", headers=bearer(calm)).status_code == 200
        assert c.get("/healthz").status_code == 200


@contextmanager
def held_request(url: str, key: str, path: str) -> Iterator[None]:
    """A streaming request kept open (a followed job log) until the block ends."""
    opened, done = threading.Event(), threading.Event()

    def run() -> None:
        with (
            httpx.Client(base_url=url, headers=bearer(key), timeout=60) as c,
            c.stream("GET", path, params={"follow": "true"}) as r,
        ):
            assert r.status_code == 200
            opened.set()
            done.wait(30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert opened.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def test_concurrency_stored_bytes_and_jobs(realm: Realm) -> None:
    realm.tenant("acme")
    key = realm.key("acme", "maintainer")
    realm.admin.put(
        "/api/v1/tenants/acme/quotas",
        json={"max_concurrent": 1, "max_jobs": 1, "max_stored_bytes": 2000},
    )
    with realm.client(key) as api:
        publish_double(api)  # ~150 bytes of ONNX
        assert upload_dataset(api, "rows").status_code == 201
        r = upload_dataset(api, "big", CSV * 200)
        assert r.status_code == 429, r.text
        assert "storage quota" in r.json()["error"] and r.headers["retry-after"]
        files = {"file": ("m.onnx", b"x" * 3000, "application/octet-stream")}
        r = api.post("/models/double/versions", files=files, data={"format": "onnx"})
        assert r.status_code == 429
        spec = {"kind": "batch_predict", "dataset": "rows", "model": "double"}
        first = api.post("/jobs", json=spec)
        assert first.status_code == 201, first.text  # queued: no job slots in these tests
        r = api.post("/jobs", json=spec)
        assert r.status_code == 429 and "jobs queued or running" in r.json()["error"]
        job = first.json()["id"]
        with held_request(realm.url, key, f"/api/v1/jobs/{job}/logs"):
            r = api.get("/models")
            assert r.status_code == 429 and "requests running" in r.json()["error"]
            assert r.headers["retry-after"] == "1"
        # the slot frees once the held request ends (the server notices within ~0.5 s)
        assert wait_for(lambda: api.get("/models").status_code == 200, timeout=5)
        assert api.post(f"/jobs/{job}/cancel").status_code == 200
        time.sleep(0.1)
        assert api.post("/jobs", json=spec).status_code == 201  # cancelled: a slot again
