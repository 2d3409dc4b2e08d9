"""The pure parts: role table, key format, expiry parsing, window maths, key cache."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from modelplane.auth import Need, Principal, Role, classify, parse_expiry
from modelplane.auth.cache import KeyCache
from modelplane.auth.grants import split_shared
from modelplane.auth.keys import digest, new_key, prefix_of
from modelplane.auth.limiter import window
from modelplane.auth.quotas import burst_for
from modelplane.auth.tenants import check_tenant
from modelplane.cli.auth import is_loopback
from modelplane.errors import InvalidInput


@pytest.mark.parametrize(
    ("method", "path", "need"),
    [
        ("GET", "/healthz", Need.public),
        ("GET", "/v2/health/live", Need.public),
        ("GET", "/v2/health/ready", Need.public),
        ("GET", "/metrics", Need.read),
        ("GET", "/api/v1/models", Need.read),
        ("HEAD", "/api/v1/models/m/versions/1/artifact", Need.read),
        ("GET", "/v2/models/m", Need.read),
        ("POST", "/v2/repository/index", Need.read),
        ("POST", "/v2/models/m/infer", Need.infer),
        ("POST", "/v2/models/m/versions/2/infer", Need.infer),
        ("POST", "/v1/models/m:predict", Need.infer),
        ("POST", "/v1/models/m/labels/prod:classify", Need.infer),
        ("POST", "/v1/models/m:regress", Need.infer),
        ("POST", "/v1/embeddings", Need.infer),
        ("POST", "/v1/chat/completions", Need.infer),
        ("POST", "/v1/completions", Need.infer),
        ("POST", "/api/v1/models", Need.write),
        ("DELETE", "/api/v1/models/m/versions/1", Need.write),
        ("POST", "/api/v1/models/m/grants", Need.write),
        ("PATCH", "/api/v1/deployments/d", Need.write),
        ("POST", "/api/v1/datasets", Need.write),
        ("POST", "/api/v1/jobs/abc/cancel", Need.write),
        ("POST", "/v2/repository/models/m/load", Need.write),
        ("GET", "/api/v1/tenants", Need.admin),
        ("PUT", "/api/v1/tenants/t/quotas", Need.admin),
        ("POST", "/api/v1/keys", Need.admin),
        ("GET", "/api/v1/keys/3", Need.admin),
        ("GET", "/api/v1/audit", Need.admin),
        ("POST", "/api/v1/modelsx", Need.admin),  # not under /api/v1/models: closed
        ("POST", "/api/v1/something-new", Need.admin),
        ("POST", "/v2/models/m/load", Need.admin),
    ],
)
def test_role_table(method: str, path: str, need: Need) -> None:
    assert classify(method, path) is need


def test_metrics_can_be_public() -> None:
    assert classify("GET", "/metrics", metrics_public=True) is Need.public


def test_roles_are_ordered() -> None:
    assert Role.viewer < Role.user < Role.maintainer < Role.admin
    assert Role.user >= Need.infer and Role.viewer < Need.infer
    assert Role.maintainer >= Need.write and Role.user < Need.write


def test_key_format_and_hash() -> None:
    prefix, key = new_key()
    assert key.startswith(f"mp_{prefix}_") and len(key) > 50
    assert prefix_of(key) == prefix
    assert prefix_of("mp_short") is None and prefix_of("Bearer x") is None
    assert digest(key) != digest(key + "x") and len(digest(key)) == 64
    assert new_key()[1] != key


def test_parse_expiry() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2031-02-03", now) == datetime(2031, 2, 3, tzinfo=UTC)
    assert parse_expiry("2031-02-03T04:05:06+02:00", now) == datetime(
        2031, 2, 3, 2, 5, 6, tzinfo=UTC
    )
    assert parse_expiry(None, now) is None and parse_expiry(" ", now) is None
    for bad in ("yesterday", "2029-01-01", "0d", "5y", "99999999999d"):
        with pytest.raises(InvalidInput):
            parse_expiry(bad, now)


def test_tenant_names_never_contain_the_share_separator() -> None:
    assert check_tenant("acme-2") == "acme-2"
    for bad in ("Acme", "a~b", "a.b", "", "-a", "x" * 64):
        with pytest.raises(InvalidInput):
            check_tenant(bad)
    assert split_shared("acme~double") == ("acme", "double")
    assert split_shared("double") is None and split_shared("~double") is None


def test_moving_window_matches_the_bucket_bounds() -> None:
    w = window(10, 20)  # rate 10/s, burst 20: 20 per 2 s
    assert (w.amount, w.get_expiry()) == (20, 2)
    w = window(100, 100)
    assert (w.amount, w.get_expiry()) == (100, 1)
    w = window(0.5, 1)  # one request every two seconds
    assert (w.amount, w.get_expiry()) == (1, 2)
    assert burst_for(10, 0) == 10 and burst_for(10, 5) == 10 and burst_for(10, 25) == 25
    assert burst_for(0, 5) == 0


def test_key_cache_expires_entries() -> None:
    cache = KeyCache(ttl=0.05)
    who = Principal("t", Role.user, "k", "1")
    cache.put("secret", who)
    assert cache.get("secret") is who
    time.sleep(0.06)
    assert cache.get("secret") is None
    soon = datetime.now(UTC) + timedelta(milliseconds=30)
    cache = KeyCache(ttl=60)
    cache.put("s2", Principal("t", Role.user, "k", "2", soon))
    assert cache.get("s2") is not None
    time.sleep(0.05)
    assert cache.get("s2") is None  # the key's own expiry beats the ttl
    cache.put("s3", who)
    cache.drop("1")
    assert cache.get("s3") is None


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.org"):
        assert not is_loopback(host), host
