"""The SQL side of auth on SQLite and PostgreSQL alike: keys, tenants, grants, quotas, audit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from modelplane.auth.audit import AuditLog, entry
from modelplane.auth.grants import Grants
from modelplane.auth.keys import KeyStore
from modelplane.auth.quotas import QuotaBook, Usage
from modelplane.auth.tenants import TenantStore
from modelplane.db import make_engine, upgrade, utcnow
from modelplane.errors import Conflict, InvalidInput, NotFound
from modelplane.schemas.auth import Quotas
from modelplane.settings import Settings


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def test_keys_verify_only_live_keys(engine: Engine) -> None:
    keys = KeyStore(engine)
    with pytest.raises(NotFound):
        keys.create("nosuch", "user")
    with pytest.raises(InvalidInput):
        keys.create("default", "root")
    made = keys.create("default", "user", "k1")
    found = keys.verify(made.key)
    assert found is not None and (found.id, found.role, found.tenant) == (
        made.id,
        "user",
        "default",
    )
    assert keys.get(made.id).last_used_at is not None
    assert keys.verify(made.key[:-1] + ("A" if made.key[-1] != "A" else "B")) is None
    assert keys.verify("mp_" + made.prefix + "_x") is None and keys.verify("") is None
    keys.revoke(made.id)
    assert keys.verify(made.key) is None
    soon = keys.create("default", "viewer", expires_at=utcnow() + timedelta(seconds=1))
    assert keys.verify(soon.key) is not None
    time.sleep(1.1)
    assert keys.verify(soon.key) is None
    page, token = keys.list(include_revoked=True, limit=1)
    assert len(page) == 1 and token
    rest, token = keys.list(include_revoked=True, limit=10, page_token=token)
    assert [k.id for k in page + rest] == [made.id, soon.id] and token is None


def test_tenants_and_quotas(engine: Engine, tmp_path: Path) -> None:
    tenants = TenantStore(engine)
    assert tenants.get("default").name == "default"
    tenants.create("acme")
    with pytest.raises(Conflict):
        tenants.create("acme")
    book = QuotaBook(tenants, Settings(data_dir=tmp_path, quota_max_jobs=7), ttl=60)
    assert book.limits("acme").max_jobs == 7
    eff = book.set("acme", Quotas(max_jobs=2, requests_per_second=3.5))
    assert (eff.max_jobs, eff.requests_per_second, eff.burst) == (2, 3.5, 4)
    assert book.limits("acme").max_jobs == 2 and book.limits("default").max_jobs == 7
    book.set("acme", Quotas())  # back to the defaults
    assert book.limits("acme").max_jobs == 7
    with pytest.raises(NotFound):
        book.set("nosuch", Quotas())


def test_grants(engine: Engine) -> None:
    grants = Grants(engine, ttl=60)
    g = grants.create("a", "deployment", "d", "b", "alice")
    assert g.shared_name == "a~d"
    assert grants.allows("b", "deployment", "a", "d")
    assert not grants.allows("c", "deployment", "a", "d")
    assert not grants.allows("b", "model", "a", "d")
    with pytest.raises(Conflict):
        grants.create("a", "deployment", "d", "b", "alice")
    with pytest.raises(InvalidInput):
        grants.create("a", "deployment", "d", "a", "alice")
    given, received = grants.list_tenant("b")
    assert given == [] and [x.name for x in received] == ["d"]
    grants.revoke("a", "deployment", "d", "b")
    assert not grants.allows("b", "deployment", "a", "d")
    with pytest.raises(NotFound):
        grants.revoke("a", "deployment", "d", "b")


def test_audit_log_appends_and_queries(engine: Engine) -> None:
    log = AuditLog(engine)
    start = utcnow()
    for i in range(5):
        log.record(entry("t", f"actor{i % 2}", "1", "POST /api/v1/models", "/x", 201, "127.0.0.1"))
    log.append(entry("u", "other", "2", "DELETE /api/v1/models/{name}", "/y", 204, ""))
    log.stop()
    rows, _ = log.query(limit=100)
    assert len(rows) == 6
    assert len(log.query(tenant="t")[0]) == 5 and len(log.query(actor="actor0")[0]) == 3
    assert len(log.query(action="DELETE")[0]) == 1
    assert len(log.query(action="POST /api/v1/models%")[0]) == 0  # prefix, not a pattern
    assert len(log.query(since=start)[0]) == 6
    assert log.query(until=start)[0] == []
    first, token = log.query(limit=4)
    rest, end = log.query(limit=4, page_token=token)
    assert len(first) == 4 and len(rest) == 2 and end is None
    long = entry("t", "a" * 500, "1", "x" * 900, "/" * 5000, 200, "c" * 200)
    log.append(long)  # long values are cut to their columns, not refused
    assert len(log.query(limit=1)[0][0].target) == 1000


def test_usage_counts(engine: Engine) -> None:
    usage = Usage(engine)
    assert usage.stored_bytes("default") == 0 and usage.active_jobs("default") == 0
