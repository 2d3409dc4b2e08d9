"""Effective quotas (a tenant's own values over the server defaults) and usage counts.

0 means unlimited. ``burst`` is at least one second's worth of requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from modelplane.auth.cache import Snapshot
from modelplane.auth.tenants import TenantStore
from modelplane.datasets.tables import DatasetRow
from modelplane.jobs.tables import JobRow
from modelplane.registry.tables import ModelRow, VersionRow
from modelplane.schemas.auth import EffectiveQuotas, Quotas
from modelplane.settings import Settings

ACTIVE_JOB_STATES = ("queued", "running")


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_second: float
    burst: int
    key_requests_per_second: float
    key_burst: int
    max_concurrent: int
    max_stored_bytes: int
    max_jobs: int
    checked: bool = False  # any rate, storage or job limit: the gate has work to do

    def __post_init__(self) -> None:
        checks = (self.requests_per_second, self.key_requests_per_second,
                  self.max_stored_bytes, self.max_jobs)  # fmt: skip
        object.__setattr__(self, "checked", any(checks))


def burst_for(rate: float, burst: int) -> int:
    return max(burst, math.ceil(rate)) if rate > 0 else 0


def defaults(settings: Settings) -> Quotas:
    return Quotas(
        requests_per_second=settings.quota_requests_per_second,
        burst=settings.quota_burst,
        key_requests_per_second=settings.quota_key_requests_per_second,
        key_burst=settings.quota_key_burst,
        max_concurrent=settings.quota_max_concurrent,
        max_stored_bytes=settings.quota_max_stored_bytes,
        max_jobs=settings.quota_max_jobs,
    )


def effective(own: Quotas, base: Quotas) -> Limits:
    def pick(field: str) -> float:
        value = getattr(own, field)
        return float(value if value is not None else getattr(base, field) or 0)

    rps, key_rps = pick("requests_per_second"), pick("key_requests_per_second")
    return Limits(
        requests_per_second=rps,
        burst=burst_for(rps, int(pick("burst"))),
        key_requests_per_second=key_rps,
        key_burst=burst_for(key_rps, int(pick("key_burst"))),
        max_concurrent=int(pick("max_concurrent")),
        max_stored_bytes=int(pick("max_stored_bytes")),
        max_jobs=int(pick("max_jobs")),
    )


class QuotaBook:
    """Every tenant's limits in memory, refreshed from SQL every ``ttl`` seconds."""

    def __init__(self, tenants: TenantStore, settings: Settings, ttl: float) -> None:
        self.tenants = tenants
        self.base = defaults(settings)
        self.fallback = effective(Quotas(), self.base)
        self._snapshot = Snapshot(self._load, ttl)

    def _load(self) -> dict[str, Limits]:
        return {t: effective(q, self.base) for t, q in self.tenants.all_quotas().items()}

    def limits(self, tenant: str) -> Limits:
        return self._snapshot.get().get(tenant, self.fallback)

    def describe(self, tenant: str) -> EffectiveQuotas:
        own = self.tenants.quotas(tenant)
        lim = effective(own, self.base)
        return EffectiveQuotas(tenant=tenant, configured=own, **_fields(lim))

    def set(self, tenant: str, quotas: Quotas) -> EffectiveQuotas:
        self.tenants.set_quotas(tenant, quotas)
        self._snapshot.reload()
        return self.describe(tenant)


def _fields(lim: Limits) -> dict[str, float | int]:
    return {f: getattr(lim, f) for f in Limits.__dataclass_fields__ if f != "checked"}


class Usage:
    """What a tenant holds now: stored bytes and jobs in flight."""

    def __init__(self, engine: Engine) -> None:
        self._read = sessionmaker(engine)

    def stored_bytes(self, tenant: str) -> int:
        versions = (
            select(func.coalesce(func.sum(VersionRow.artifact_size), 0))
            .join(ModelRow, ModelRow.id == VersionRow.model_id)
            .where(ModelRow.tenant == tenant)
        )
        datasets = select(func.coalesce(func.sum(DatasetRow.size), 0)).where(
            DatasetRow.tenant == tenant
        )
        with self._read() as s:
            return int(s.scalar(versions) or 0) + int(s.scalar(datasets) or 0)

    def active_jobs(self, tenant: str) -> int:
        q = select(func.count(JobRow.id)).where(
            JobRow.tenant == tenant, JobRow.state.in_(ACTIVE_JOB_STATES)
        )
        with self._read() as s:
            return int(s.scalar(q) or 0)
