"""Tenant, key and quota routes under /api/v1 (admin only: see ``auth.roles``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from modelplane.auth import Auth, parse_expiry
from modelplane.auth.tenants import check_tenant
from modelplane.schemas.auth import (
    ApiKey,
    EffectiveQuotas,
    KeyCreate,
    KeyPage,
    NewApiKey,
    Quotas,
    Tenant,
    TenantCreate,
    TenantPage,
)

router = APIRouter(prefix="/api/v1", tags=["tenants and keys"])
Limit = Annotated[int, Query(ge=1, le=1000)]
Token = Annotated[str | None, Query(max_length=512)]
KeyId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def auth(request: Request) -> Auth:
    a: Auth = request.app.state.auth
    return a


AuthSvc = Annotated[Auth, Depends(auth)]


# -- tenants -----------------------------------------------------------------
@router.post("/tenants", status_code=201)
def create_tenant(body: TenantCreate, a: AuthSvc) -> Tenant:
    return a.tenants.create(body.name, body.description)


@router.get("/tenants")
def list_tenants(a: AuthSvc, limit: Limit = 100, page_token: Token = None) -> TenantPage:
    items, token = a.tenants.list(limit, page_token)
    return TenantPage(tenants=items, next_page_token=token)


@router.get("/tenants/{name}")
def get_tenant(name: str, a: AuthSvc) -> Tenant:
    return a.tenants.get(check_tenant(name))


@router.get("/tenants/{name}/quotas")
def get_quotas(name: str, a: AuthSvc) -> EffectiveQuotas:
    return a.quotas.describe(check_tenant(name))


@router.put("/tenants/{name}/quotas")
def set_quotas(name: str, body: Quotas, a: AuthSvc) -> EffectiveQuotas:
    """Replace the tenant's quotas (0: unlimited; null or left out: the server default)."""
    return a.quotas.set(check_tenant(name), body)


# -- keys ----------------------------------------------------------------------
@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, a: AuthSvc) -> NewApiKey:
    """Make a key; the answer holds ``key``, shown this once and stored only as a hash."""
    check_tenant(body.tenant)
    return a.keys.create(body.tenant, body.role, body.name, parse_expiry(body.expires))


@router.get("/keys")
def list_keys(
    a: AuthSvc,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    include_revoked: bool = False,
    limit: Limit = 100,
    page_token: Token = None,
) -> KeyPage:
    items, token = a.keys.list(tenant, include_revoked, limit, page_token)
    return KeyPage(keys=items, next_page_token=token)


@router.get("/keys/{key_id}")
def get_key(key_id: KeyId, a: AuthSvc) -> ApiKey:
    return a.keys.get(key_id)


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: KeyId, a: AuthSvc) -> ApiKey:
    """Revoke at once in this process; other server processes stop accepting it within the
    key cache's ttl (``MODELPLANE_AUTH_CACHE_SECONDS``)."""
    return a.revoke(key_id)
