"""Deployment routes under /api/v1/deployments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from modelplane.api.deps import tenant
from modelplane.schemas.serving import Deployment, DeploymentCreate, DeploymentUpdate
from modelplane.serving.manager import ModelManager

router = APIRouter(prefix="/api/v1", tags=["deployments"])
Tenant = Annotated[str, Depends(tenant)]


def manager(request: Request) -> ModelManager:
    m: ModelManager = request.app.state.manager
    return m


Manager = Annotated[ModelManager, Depends(manager)]


class DeploymentList(BaseModel):
    deployments: list[Deployment]


@router.post("/deployments", status_code=201)
async def create_deployment(body: DeploymentCreate, m: Manager, t: Tenant) -> Deployment:
    """Serve a model reference (``name``, ``name@3``, ``name@alias``); loads in the background."""
    return await m.create(t, body)


@router.get("/deployments")
async def list_deployments(m: Manager, t: Tenant) -> DeploymentList:
    return DeploymentList(deployments=m.list(t))


@router.get("/deployments/{name}")
async def get_deployment(name: str, m: Manager, t: Tenant) -> Deployment:
    return m.status(m.lookup(t, name))


@router.patch("/deployments/{name}")
async def update_deployment(name: str, body: DeploymentUpdate, m: Manager, t: Tenant) -> Deployment:
    """Change batching live; a new model reference or instance count swaps with no downtime."""
    return await m.update(t, name, body)


@router.delete("/deployments/{name}", status_code=204)
async def delete_deployment(name: str, m: Manager, t: Tenant) -> Response:
    await m.delete(t, name)
    return Response(status_code=204)
