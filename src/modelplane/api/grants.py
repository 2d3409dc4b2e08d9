"""Sharing routes: ``/api/v1/models/{m}/grants``, ``/api/v1/deployments/{d}/grants``,
``/api/v1/grants`` (what the caller's tenant gave and received).

A grantee addresses a shared resource as ``<owner>~<name>`` (see ``auth.grants``).
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from modelplane.api.deps import actor, registry, tenant
from modelplane.api.tenants import AuthSvc
from modelplane.auth.tenants import check_tenant
from modelplane.registry.names import check_name
from modelplane.registry.service import RegistryService
from modelplane.schemas.auth import Grant, GrantCreate, GrantList
from modelplane.serving.manager import ModelManager

router = APIRouter(prefix="/api/v1", tags=["sharing"])
Tenant = Annotated[str, Depends(tenant)]
Actor = Annotated[str, Depends(actor)]
Registry = Annotated[RegistryService, Depends(registry)]


def manager(request: Request) -> ModelManager:
    m: ModelManager = request.app.state.manager
    return m


Manager = Annotated[ModelManager, Depends(manager)]


class TenantGrants(BaseModel):
    given: list[Grant]
    received: list[Grant]


@router.get("/grants")
def tenant_grants(a: AuthSvc, t: Tenant) -> TenantGrants:
    """Grants this tenant gave, and grants it received (use those as ``<owner>~<name>``)."""
    given, received = a.grants.list_tenant(t)
    return TenantGrants(given=given, received=received)


# -- models --------------------------------------------------------------------
@router.post("/models/{name}/grants", status_code=201)
def grant_model(
    name: str, body: GrantCreate, a: AuthSvc, svc: Registry, t: Tenant, who: Actor
) -> Grant:
    """Let tenant ``body.tenant`` deploy this model as ``<owner>~<name>[@version|@alias]``."""
    svc.store.get_model(t, check_name(name, "model name"))
    return a.grants.create(t, "model", name, body.tenant, who)


@router.get("/models/{name}/grants")
def model_grants(name: str, a: AuthSvc, svc: Registry, t: Tenant) -> GrantList:
    svc.store.get_model(t, check_name(name, "model name"))
    return GrantList(grants=a.grants.list_for(t, "model", name))


@router.delete("/models/{name}/grants/{grantee}", status_code=204)
def revoke_model_grant(name: str, grantee: str, a: AuthSvc, svc: Registry, t: Tenant) -> Response:
    svc.store.get_model(t, check_name(name, "model name"))
    a.grants.revoke(t, "model", name, check_tenant(grantee))
    return Response(status_code=204)


# -- deployments -----------------------------------------------------------------
@router.post("/deployments/{name}/grants", status_code=201)
async def grant_deployment(
    name: str, body: GrantCreate, a: AuthSvc, m: Manager, t: Tenant, who: Actor
) -> Grant:
    """Let tenant ``body.tenant`` call this deployment as ``<owner>~<name>`` on every protocol."""
    m.lookup(t, name)
    return await anyio.to_thread.run_sync(a.grants.create, t, "deployment", name, body.tenant, who)


@router.get("/deployments/{name}/grants")
async def deployment_grants(name: str, a: AuthSvc, m: Manager, t: Tenant) -> GrantList:
    m.lookup(t, name)
    grants = await anyio.to_thread.run_sync(a.grants.list_for, t, "deployment", name)
    return GrantList(grants=grants)


@router.delete("/deployments/{name}/grants/{grantee}", status_code=204)
async def revoke_deployment_grant(
    name: str, grantee: str, a: AuthSvc, m: Manager, t: Tenant
) -> Response:
    m.lookup(t, name)
    await anyio.to_thread.run_sync(a.grants.revoke, t, "deployment", name, check_tenant(grantee))
    return Response(status_code=204)
