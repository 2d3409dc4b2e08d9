"""Tenants and their quotas in SQL. Tenant ``default`` always exists (migration 0005)."""

from __future__ import annotations

import re

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from modelplane.auth.tables import QuotaRow, TenantRow
from modelplane.db import utcnow, writer
from modelplane.errors import BadRequest, Conflict, InvalidInput, NotFound
from modelplane.registry.sql_store import decode_token, encode_token
from modelplane.schemas.auth import Quotas, Tenant

# No '.' or '~': "<tenant>~<name>" addresses a shared resource unambiguously.
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}", re.ASCII)
QUOTA_FIELDS = tuple(Quotas.model_fields)


def check_tenant(name: str) -> str:
    if not _TENANT.fullmatch(name):
        raise InvalidInput(
            f"invalid tenant name {name!r}: use 1-63 lowercase ASCII letters, digits, '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(name=row.name, description=row.description, created_at=row.created_at)


def _quotas(row: QuotaRow | None) -> Quotas:
    if row is None:
        return Quotas()
    return Quotas(**{f: getattr(row, f) for f in QUOTA_FIELDS})


class TenantStore:
    def __init__(self, engine: Engine) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)

    def create(self, name: str, description: str = "") -> Tenant:
        check_tenant(name)
        with self._write() as s, s.begin():
            if s.get(TenantRow, name) is not None:
                raise Conflict(f"tenant {name!r} already exists")
            row = TenantRow(name=name, description=description, created_at=utcnow())
            s.add(row)
            s.flush()
            return _tenant(row)

    def get(self, name: str) -> Tenant:
        with self._read() as s:
            row = s.get(TenantRow, name)
            if row is None:
                raise NotFound(f"tenant {name!r} not found")
            return _tenant(row)

    def list(
        self, limit: int = 100, page_token: str | None = None
    ) -> tuple[list[Tenant], str | None]:
        q = select(TenantRow).order_by(TenantRow.name).limit(limit + 1)
        after = decode_token(page_token)
        if after is not None:
            if not isinstance(after, str):
                raise BadRequest("invalid page_token")
            q = q.where(TenantRow.name > after)
        with self._read() as s:
            rows = list(s.scalars(q))
        more = len(rows) > limit
        rows = rows[:limit]
        return [_tenant(r) for r in rows], encode_token(rows[-1].name) if more else None

    # -- quotas ------------------------------------------------------------
    def quotas(self, tenant: str) -> Quotas:
        with self._read() as s:
            if s.get(TenantRow, tenant) is None:
                raise NotFound(f"tenant {tenant!r} not found")
            return _quotas(s.get(QuotaRow, tenant))

    def all_quotas(self) -> dict[str, Quotas]:
        with self._read() as s:
            return {r.tenant: _quotas(r) for r in s.scalars(select(QuotaRow))}

    def set_quotas(self, tenant: str, quotas: Quotas) -> Quotas:
        """Replace the tenant's quotas (a field left out or null: the server default)."""
        with self._write() as s, s.begin():
            if s.get(TenantRow, tenant) is None:
                raise NotFound(f"tenant {tenant!r} not found")
            row = s.get(QuotaRow, tenant)
            if row is None:
                row = QuotaRow(tenant=tenant)
                s.add(row)
            for f in QUOTA_FIELDS:
                setattr(row, f, getattr(quotas, f))
            row.updated_at = utcnow()
            s.flush()
            return _quotas(row)
