"""Request-scoped lookups shared by every route module."""

from __future__ import annotations

from fastapi import Request

from modelplane.registry.service import RegistryService
from modelplane.registry.tables import DEFAULT_TENANT


def registry(request: Request) -> RegistryService:
    svc: RegistryService = request.app.state.registry
    return svc


def tenant(request: Request) -> str:
    """The caller's tenant; set by the auth layer, the default tenant while auth is off."""
    return getattr(request.state, "tenant", DEFAULT_TENANT)


def actor(request: Request) -> str:
    """Who is calling, for history and audit; the key's name once auth is on."""
    return getattr(request.state, "actor", "anonymous")
