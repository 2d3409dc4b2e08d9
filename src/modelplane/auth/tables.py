"""Auth tables: tenants, API keys (hashes only), grants, quotas and the append-only audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelplane.db.base import Base, utcnow


class TenantRow(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    # The key's public part (``mp_<prefix>_…``): finds the row; shown in lists.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class GrantRow(Base):
    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("owner", "kind", "name", "grantee"),
        Index("ix_grants_grantee", "grantee"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # model | deployment
    name: Mapped[str] = mapped_column(String(128))
    grantee: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuotaRow(Base):
    """A tenant's own limits; a NULL column falls back to the server default."""

    __tablename__ = "quotas"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests_per_second: Mapped[float | None]
    burst: Mapped[int | None]
    key_requests_per_second: Mapped[float | None]
    key_burst: Mapped[int | None]
    max_concurrent: Mapped[int | None]
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_jobs: Mapped[int | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    """Append-only: no code path updates or deletes a row."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_tenant", "tenant", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    tenant: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(300))  # method + route template
    target: Mapped[str] = mapped_column(String(1000))  # the path called
    status: Mapped[int]
    client: Mapped[str] = mapped_column(String(64), default="")
