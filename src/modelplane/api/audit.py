"""``GET /api/v1/audit`` (admin): the audit log, newest first. No route changes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from modelplane.api.tenants import AuthSvc
from modelplane.schemas.auth import AuditPage

router = APIRouter(prefix="/api/v1", tags=["audit"])


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.get("/audit")
def audit_log(
    a: AuthSvc,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[
        str | None, Query(max_length=300, description="A prefix: 'POST', 'DELETE /api/v1/models'")
    ] = None,
    since: Annotated[datetime | None, Query(description="ISO time (UTC if no offset)")] = None,
    until: Annotated[datetime | None, Query(description="ISO time, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditPage:
    entries, token = a.audit.query(
        tenant=tenant, actor=actor, action=action, since=_utc(since), until=_utc(until),
        limit=limit, page_token=page_token,
    )  # fmt: skip
    return AuditPage(entries=entries, next_page_token=token)
