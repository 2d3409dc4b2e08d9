"""SDK calls for tenants, keys, grants, quotas and the audit log (``Client`` delegates here)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelplane.errors import InvalidInput
from modelplane.schemas.auth import (
    ApiKey,
    AuditEntry,
    EffectiveQuotas,
    Grant,
    NewApiKey,
    Tenant,
)

if TYPE_CHECKING:
    from modelplane.client.http import Client

KINDS = ("model", "deployment")


def _grants_path(kind: str, name: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"kind must be 'model' or 'deployment', not {kind!r}")
    return f"/{kind}s/{name}/grants"


def create_tenant(client: Client, name: str, description: str = "") -> Tenant:
    return client._get(Tenant, "POST", "/tenants", json={"name": name, "description": description})


def list_tenants(client: Client, page_size: int = 100) -> Iterator[Tenant]:
    pages = client._pages("/tenants", "tenants", {"limit": page_size})
    return (Tenant.model_validate(t) for t in pages)


def get_quotas(client: Client, tenant: str) -> EffectiveQuotas:
    return client._get(EffectiveQuotas, "GET", f"/tenants/{tenant}/quotas")


def set_quotas(client: Client, tenant: str, quotas: dict[str, Any]) -> EffectiveQuotas:
    return client._get(EffectiveQuotas, "PUT", f"/tenants/{tenant}/quotas", json=quotas)


def create_key(
    client: Client, tenant: str, role: str, name: str = "", expires: str | None = None
) -> NewApiKey:
    body = {"tenant": tenant, "role": role, "name": name, "expires": expires}
    return client._get(NewApiKey, "POST", "/keys", json=body)


def list_keys(
    client: Client, tenant: str | None = None, include_revoked: bool = False, page_size: int = 100
) -> Iterator[ApiKey]:
    params = {"tenant": tenant, "include_revoked": include_revoked, "limit": page_size}
    return (ApiKey.model_validate(k) for k in client._pages("/keys", "keys", params))


def revoke_key(client: Client, key_id: int) -> ApiKey:
    return client._get(ApiKey, "POST", f"/keys/{key_id}/revoke")


def grant(client: Client, kind: str, name: str, tenant: str) -> Grant:
    return client._get(Grant, "POST", _grants_path(kind, name), json={"tenant": tenant})


def list_grants(client: Client, kind: str, name: str) -> list[Grant]:
    body = client._call("GET", _grants_path(kind, name)).json()
    return [Grant.model_validate(g) for g in body["grants"]]


def revoke_grant(client: Client, kind: str, name: str, tenant: str) -> None:
    client._call("DELETE", f"{_grants_path(kind, name)}/{tenant}")


def tenant_grants(client: Client) -> tuple[list[Grant], list[Grant]]:
    body = client._call("GET", "/grants").json()
    given = [Grant.model_validate(g) for g in body["given"]]
    return given, [Grant.model_validate(g) for g in body["received"]]


def audit(
    client: Client,
    tenant: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 100,
) -> Iterator[AuditEntry]:
    params = {
        "tenant": tenant,
        "actor": actor,
        "action": action,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "limit": page_size,
    }
    return (AuditEntry.model_validate(e) for e in client._pages("/audit", "entries", params))
