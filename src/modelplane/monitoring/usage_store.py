"""SQL side of usage metering: additive upserts (SQLite and PostgreSQL) and grouped reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import sessionmaker

from modelplane.datasets.tables import DatasetRow
from modelplane.db.engine import writer
from modelplane.monitoring.tables import JobUsageRow, StorageUsageRow, UsageRow
from modelplane.registry.tables import ModelRow, VersionRow

GROUPS = ("tenant", "deployment", "day")
COUNTERS = (
    "requests", "items", "compute_seconds", "bytes_in", "bytes_out", "prompt_tokens",
    "completion_tokens",
)  # fmt: skip
GB = 1e9
DAYS_PER_MONTH = 30.0


@dataclass(slots=True)
class Totals:
    tenant: str
    deployment: str
    day: date
    requests: int
    items: int
    compute_seconds: float
    bytes_in: int
    bytes_out: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Prices:
    per_1k_requests: float = 0.0
    per_compute_second: float = 0.0
    per_gb_month: float = 0.0


def _insert(engine: Engine) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update`` (SQLite and PostgreSQL)."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


class UsageStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine)
        self._writer = writer(engine)

    # -- writes --------------------------------------------------------------------
    def add(self, totals: Sequence[Totals]) -> None:
        """Add ``totals`` to their rows (created when missing), in one transaction."""
        insert = _insert(self.engine)
        with self._writer.begin() as conn:
            for t in sorted(totals, key=lambda t: (t.tenant, t.deployment, t.day)):
                values = {f: getattr(t, f) for f in ("tenant", "deployment", "day", *COUNTERS)}
                stmt = insert(UsageRow).values(**values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["tenant", "deployment", "day"],
                    set_={c: getattr(UsageRow, c) + stmt.excluded[c] for c in COUNTERS},
                )
                conn.execute(stmt)

    def add_job(
        self, job_id: str, tenant: str, kind: str, cpu_seconds: float, wall_seconds: float
    ) -> None:
        """Add one run (attempt) of a job; a resumed job's runs add up."""
        now = datetime.now(UTC)
        insert = _insert(self.engine)
        stmt = insert(JobUsageRow).values(
            job_id=job_id, tenant=tenant, kind=kind, day=now.date(), cpu_seconds=cpu_seconds,
            wall_seconds=wall_seconds, runs=1, updated_at=now,
        )  # fmt: skip
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id"],
            set_={
                "cpu_seconds": JobUsageRow.cpu_seconds + stmt.excluded.cpu_seconds,
                "wall_seconds": JobUsageRow.wall_seconds + stmt.excluded.wall_seconds,
                "runs": JobUsageRow.runs + 1,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        with self._writer.begin() as conn:
            conn.execute(stmt)

    def stored_bytes(self) -> dict[str, int]:
        """Bytes of model versions and datasets, per tenant."""
        versions = (
            select(ModelRow.tenant, func.coalesce(func.sum(VersionRow.artifact_size), 0))
            .join(ModelRow, ModelRow.id == VersionRow.model_id)
            .group_by(ModelRow.tenant)
        )
        datasets = select(DatasetRow.tenant, func.coalesce(func.sum(DatasetRow.size), 0)).group_by(
            DatasetRow.tenant
        )
        out: dict[str, int] = {}
        with self._read() as s:
            for query in (versions, datasets):
                for tenant, size in s.execute(query):
                    out[tenant] = out.get(tenant, 0) + int(size or 0)
        return out

    def sample_storage(self, day: date) -> None:
        """Today's stored bytes per tenant (the last sample of a day wins)."""
        sizes = self.stored_bytes()
        insert = _insert(self.engine)
        with self._writer.begin() as conn:
            for tenant, size in sorted(sizes.items()):
                stmt = insert(StorageUsageRow).values(tenant=tenant, day=day, stored_bytes=size)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["tenant", "day"], set_={"stored_bytes": size}
                )
                conn.execute(stmt)

    # -- reports -------------------------------------------------------------------
    def report(
        self, tenant: str | None, start: date, end: date, group_by: Sequence[str], prices: Prices
    ) -> list[dict[str, Any]]:
        """Usage and cost from ``start`` to ``end`` (both included), one dict per group.

        Job CPU time and storage belong to no deployment: grouped by deployment they show on
        a row whose deployment is ``""``."""
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}

        def row(key: dict[str, Any]) -> dict[str, Any]:
            k = tuple(key.get(g) for g in group_by)
            r = rows.get(k)
            if r is None:
                r = rows[k] = {
                    **{g: key.get(g) for g in group_by},
                    **dict.fromkeys(COUNTERS, 0),
                    "compute_seconds": 0.0,
                    "job_cpu_seconds": 0.0,
                    "job_wall_seconds": 0.0,
                    "jobs": 0,
                    "stored_gb_months": 0.0,
                }
            return r

        with self._read() as s:
            cols = [getattr(UsageRow, g) for g in group_by]
            q = select(*cols, *(func.sum(getattr(UsageRow, c)) for c in COUNTERS)).where(
                UsageRow.day >= start, UsageRow.day <= end
            )
            if tenant is not None:
                q = q.where(UsageRow.tenant == tenant)
            for rec in s.execute(q.group_by(*cols) if cols else q):
                values = rec[len(cols) :]
                if values[0] is None:  # no rows at all (an aggregate without GROUP BY)
                    continue
                r = row(dict(zip(group_by, rec[: len(cols)], strict=True)))
                for c, v in zip(COUNTERS, values, strict=True):
                    # PostgreSQL sums BIGINT as NUMERIC (Decimal): back to plain numbers.
                    r[c] += float(v or 0) if c == "compute_seconds" else int(v or 0)

            other = [g for g in group_by if g != "deployment"]
            jcols = [getattr(JobUsageRow, g) for g in other]
            jq = select(
                *jcols,
                func.sum(JobUsageRow.cpu_seconds),
                func.sum(JobUsageRow.wall_seconds),
                func.count(JobUsageRow.job_id),
            ).where(JobUsageRow.day >= start, JobUsageRow.day <= end)
            if tenant is not None:
                jq = jq.where(JobUsageRow.tenant == tenant)
            for rec in s.execute(jq.group_by(*jcols) if jcols else jq):
                if not rec[-1]:
                    continue
                r = row({**dict(zip(other, rec[: len(jcols)], strict=True)), "deployment": ""})
                r["job_cpu_seconds"] += float(rec[-3] or 0.0)
                r["job_wall_seconds"] += float(rec[-2] or 0.0)
                r["jobs"] += int(rec[-1])

            scols = [getattr(StorageUsageRow, g) for g in other]
            sq = select(*scols, func.sum(StorageUsageRow.stored_bytes), func.count()).where(
                StorageUsageRow.day >= start, StorageUsageRow.day <= end
            )
            if tenant is not None:
                sq = sq.where(StorageUsageRow.tenant == tenant)
            for rec in s.execute(sq.group_by(*scols) if scols else sq):
                if not rec[-1]:
                    continue
                r = row({**dict(zip(other, rec[: len(scols)], strict=True)), "deployment": ""})
                # Each daily sample stands for one day of storage.
                r["stored_gb_months"] += float(rec[-2] or 0) / GB / DAYS_PER_MONTH

        out = []
        for k in sorted(rows, key=lambda k: tuple(str(x) for x in k)):
            r = rows[k]
            if "day" in r and isinstance(r["day"], date):
                r["day"] = r["day"].isoformat()
            r["compute_seconds"] = float(r["compute_seconds"])
            r["cost"] = round(
                r["requests"] / 1000 * prices.per_1k_requests
                + (r["compute_seconds"] + r["job_cpu_seconds"]) * prices.per_compute_second
                + r["stored_gb_months"] * prices.per_gb_month,
                6,
            )
            out.append(r)
        return out
