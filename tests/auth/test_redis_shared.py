"""Two server processes share one Redis: the rate limit holds across both."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from modelplane.settings import Settings
from tests.auth.conftest import BOOTSTRAP, bearer
from tests.conftest import ServerProcess

REDIS_URL = os.environ.get("MODELPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RATE, BURST = 10, 20  # 20 requests per 2 s, over both processes together


def _redis_problem() -> str | None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return None
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {REDIS_URL} is not reachable: {exc}"
    finally:
        client.close()


@pytest.mark.slow  # two server processes
def test_rate_limit_is_shared_through_redis(
    settings: Settings,
    spawn_server: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problem = _redis_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    for name, value in {
        "MODELPLANE_AUTH": "true",
        "MODELPLANE_BOOTSTRAP_KEY": BOOTSTRAP,
        "MODELPLANE_REDIS_URL": REDIS_URL,
        "MODELPLANE_QUOTA_REQUESTS_PER_SECOND": str(RATE),
        "MODELPLANE_QUOTA_BURST": str(BURST),
        "MODELPLANE_JOB_SLOTS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    one, two = spawn_server(settings), spawn_server(settings)
    tenant = f"t{uuid.uuid4().hex[:12]}"  # fresh counters in a Redis other runs share
    with httpx.Client(base_url=one.url, headers=bearer(BOOTSTRAP), timeout=30) as admin:
        assert admin.post("/api/v1/tenants", json={"name": tenant}).status_code == 201
        r = admin.post("/api/v1/keys", json={"tenant": tenant, "role": "viewer"})
        key = r.json()["key"]
    codes: dict[str, list[int]] = {one.url: [], two.url: []}
    clients = [httpx.Client(base_url=u, headers=bearer(key), timeout=30) for u in codes]
    started = time.monotonic()
    for i in range(3 * BURST):  # bounded: 60 requests, alternating between the processes
        c = clients[i % 2]
        r = c.get("/api/v1/models")
        assert r.status_code in (200, 429), r.text
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["error"]
        codes[str(c.base_url).rstrip("/")].append(r.status_code)
    elapsed = time.monotonic() - started
    for c in clients:
        c.close()
    accepted = sum(v.count(200) for v in codes.values())
    window = BURST / RATE
    assert BURST <= accepted <= BURST * (1 + int(elapsed / window)), (accepted, elapsed)
    if elapsed < window:
        assert accepted == BURST
    for url, seen in codes.items():  # each process both served and refused
        assert 200 in seen and 429 in seen, (url, seen)
