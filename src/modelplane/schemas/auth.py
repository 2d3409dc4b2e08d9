"""Tenants, API keys, grants, quotas and audit records; shared by the server, SDK and CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ROLES = ("viewer", "user", "maintainer", "admin")
Role = Literal["viewer", "user", "maintainer", "admin"]
GrantKind = Literal["model", "deployment"]


class Tenant(BaseModel):
    name: str
    description: str
    created_at: datetime


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = Field(default="", max_length=10_000)


class TenantPage(BaseModel):
    tenants: list[Tenant]
    next_page_token: str | None


class ApiKey(BaseModel):
    """A key as lists show it: never its secret, only the prefix that identifies it."""

    id: int
    tenant: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewApiKey(ApiKey):
    """Returned once, by the call that creates a key; only a hash of ``key`` is stored."""

    key: str


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str
    role: Role
    name: str = Field(default="", max_length=128)
    expires: str | None = Field(
        default=None, max_length=64, description="A duration (30d, 12h, 45m) or an ISO date."
    )


class KeyPage(BaseModel):
    keys: list[ApiKey]
    next_page_token: str | None


class Grant(BaseModel):
    owner: str
    kind: GrantKind
    name: str
    grantee: str
    created_by: str
    created_at: datetime

    @property
    def shared_name(self) -> str:
        """How the grantee addresses the resource: ``<owner>~<name>``."""
        return f"{self.owner}~{self.name}"


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(description="The tenant that may use the resource.")


class GrantList(BaseModel):
    grants: list[Grant]


class Quotas(BaseModel):
    """A tenant's limits; ``None`` means the server default, 0 means unlimited."""

    model_config = ConfigDict(extra="forbid")
    requests_per_second: float | None = Field(default=None, ge=0)
    burst: int | None = Field(default=None, ge=0)
    key_requests_per_second: float | None = Field(default=None, ge=0)
    key_burst: int | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, ge=0)
    max_stored_bytes: int | None = Field(default=None, ge=0)
    max_jobs: int | None = Field(default=None, ge=0)


class EffectiveQuotas(BaseModel):
    """What is enforced: the tenant's own values over the server defaults (0: unlimited)."""

    tenant: str
    configured: Quotas
    requests_per_second: float
    burst: int
    key_requests_per_second: float
    key_burst: int
    max_concurrent: int
    max_stored_bytes: int
    max_jobs: int


class AuditEntry(BaseModel):
    id: int
    at: datetime
    tenant: str
    actor: str
    key_id: str
    action: str
    target: str
    status: int
    client: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_page_token: str | None
