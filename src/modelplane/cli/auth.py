"""``modelplane tenants|keys|grants|audit``: security administration.

Over HTTP by default (an admin key in ``MODELPLANE_API_KEY``). ``--local``
opens the database instead (``MODELPLANE_DATABASE_URL`` or the data folder):
that is how the first admin key is made, before any key exists.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelplane.cli.output import console, emit, err_console, fields, table
from modelplane.cli.registry import client
from modelplane.schemas.auth import ROLES, ApiKey, EffectiveQuotas, Grant, NewApiKey, Tenant
from modelplane.settings import Settings

tenants = typer.Typer(
    help="Create and list tenants; show and set their quotas.", no_args_is_help=True
)
keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
grants = typer.Typer(help="Share models and deployments with other tenants.", no_args_is_help=True)

Local = Annotated[
    bool, typer.Option("--local", help="Open the database directly (bootstrap; no server).")
]
Kind = Annotated[str, typer.Argument(help="model or deployment")]


class _Local:
    """The stores, on the database the server uses; mutations are audited too."""

    def __init__(self) -> None:
        from modelplane.auth.audit import AuditLog
        from modelplane.auth.keys import KeyStore
        from modelplane.auth.tenants import TenantStore
        from modelplane.db import make_engine, upgrade

        settings = Settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.resolved_database_url())
        upgrade(self.engine)
        self.tenants = TenantStore(self.engine)
        self.keys = KeyStore(self.engine)
        self.audit = AuditLog(self.engine)

    def note(self, action: str, target: str) -> None:
        from modelplane.auth.audit import entry
        from modelplane.registry.tables import DEFAULT_TENANT

        try:
            who = f"local:{getpass.getuser()}"
        except (OSError, KeyError):  # no login name in this environment
            who = "local"
        self.audit.append(entry(DEFAULT_TENANT, who, "local", action, target, 200, "cli"))


@contextmanager
def _local() -> Iterator[_Local]:
    db = _Local()
    try:
        yield db
    finally:
        db.engine.dispose()


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


# -- tenants -------------------------------------------------------------------
def _show_tenants(ctx: typer.Context, items: list[Tenant]) -> None:
    if not emit(ctx, items):
        table("tenants", ["name", "description", "created"],
              [(t.name, t.description, _when(t.created_at)) for t in items])  # fmt: skip


@tenants.command("create")
def tenants_create(
    ctx: typer.Context,
    name: str,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    local: Local = False,
) -> None:
    if local:
        with _local() as db:
            t = db.tenants.create(name, description)
            db.note("POST /api/v1/tenants", "/api/v1/tenants")
    else:
        t = client(ctx).create_tenant(name, description)
    _show_tenants(ctx, [t])


@tenants.command("list")
def tenants_list(ctx: typer.Context, local: Local = False) -> None:
    if local:
        with _local() as db:
            items: list[Tenant] = []
            token = None
            while True:
                page, token = db.tenants.list(1000, token)
                items += page
                if not token:
                    break
    else:
        items = list(client(ctx).list_tenants())
    _show_tenants(ctx, items)


def _show_quotas(ctx: typer.Context, q: EffectiveQuotas) -> None:
    if emit(ctx, q):
        return
    own = q.configured.model_dump()
    fields(
        f"quotas of {q.tenant} (0: unlimited)",
        [
            (f, f"{getattr(q, f)}" + ("" if own[f] is not None else "  (server default)"))
            for f in own
        ],
    )


@tenants.command("quotas")
def tenants_quotas(ctx: typer.Context, tenant: str) -> None:
    """Show a tenant's quotas as enforced."""
    _show_quotas(ctx, client(ctx).get_quotas(tenant))


@tenants.command("set-quotas")
def tenants_set_quotas(
    ctx: typer.Context,
    tenant: str,
    requests_per_second: Annotated[float | None, typer.Option(help="Tenant rate.")] = None,
    burst: Annotated[int | None, typer.Option(help="Tenant burst.")] = None,
    key_requests_per_second: Annotated[float | None, typer.Option(help="Per-key rate.")] = None,
    key_burst: Annotated[int | None, typer.Option(help="Per-key burst.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    max_stored_bytes: Annotated[int | None, typer.Option(help="Versions + datasets.")] = None,
    max_jobs: Annotated[int | None, typer.Option(help="Jobs queued or running.")] = None,
) -> None:
    """Replace a tenant's quotas (0: unlimited; an option left out: the server default)."""
    values: dict[str, Any] = {
        "requests_per_second": requests_per_second, "burst": burst,
        "key_requests_per_second": key_requests_per_second, "key_burst": key_burst,
        "max_concurrent": max_concurrent, "max_stored_bytes": max_stored_bytes,
        "max_jobs": max_jobs,
    }  # fmt: skip
    _show_quotas(ctx, client(ctx).set_quotas(tenant, **values))


# -- keys --------------------------------------------------------------------------
def _show_keys(ctx: typer.Context, items: list[ApiKey]) -> None:
    if not emit(ctx, items):
        table(
            "API keys",
            ["id", "tenant", "name", "role", "key", "created", "expires", "revoked", "used"],
            [
                (k.id, k.tenant, k.name, k.role, f"mp_{k.prefix}_…", _when(k.created_at),
                 _when(k.expires_at), _when(k.revoked_at), _when(k.last_used_at))
                for k in items
            ],
        )  # fmt: skip


@keys.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")],
    tenant: Annotated[str, typer.Option(help="The key's tenant.")] = "default",
    name: Annotated[str, typer.Option(help="Shown in lists and the audit log.")] = "",
    expires: Annotated[str | None, typer.Option(help="30d, 12h, 45m or an ISO date.")] = None,
    local: Local = False,
) -> None:
    """Make a key. It is printed once; only its hash is stored."""
    new: NewApiKey
    if local:
        from modelplane.auth.keys import check_role, parse_expiry

        check_role(role)
        with _local() as db:
            new = db.keys.create(tenant, role, name, parse_expiry(expires))
            db.note("POST /api/v1/keys", "/api/v1/keys")
    else:
        new = client(ctx).create_key(tenant, role, name, expires)
    if emit(ctx, new):
        return
    _show_keys(ctx, [new])
    err_console.print("[yellow]This key is shown once; store it now:[/yellow]")
    console.print(escape(new.key), soft_wrap=True)


@keys.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    local: Local = False,
) -> None:
    if local:
        with _local() as db:
            items, _ = db.keys.list(tenant, all_, 1000)
    else:
        items = list(client(ctx).list_keys(tenant, all_))
    _show_keys(ctx, items)


@keys.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: int, local: Local = False) -> None:
    """Revoke a key (running servers stop accepting it within MODELPLANE_AUTH_CACHE_SECONDS)."""
    if local:
        with _local() as db:
            k = db.keys.revoke(key_id)
            db.note("POST /api/v1/keys/{key_id}/revoke", f"/api/v1/keys/{key_id}/revoke")
    else:
        k = client(ctx).revoke_key(key_id)
    _show_keys(ctx, [k])


# -- grants --------------------------------------------------------------------------
def _show_grants(ctx: typer.Context, title: str, items: list[Grant]) -> None:
    if not emit(ctx, items):
        table(title, ["kind", "owner", "name", "grantee", "use it as", "by", "created"],
              [(g.kind, g.owner, g.name, g.grantee, g.shared_name, g.created_by,
                _when(g.created_at)) for g in items])  # fmt: skip


@grants.command("add")
def grants_add(ctx: typer.Context, kind: Kind, name: str, tenant: str) -> None:
    """Let TENANT use your model or deployment NAME (it calls it <your tenant>~NAME)."""
    _show_grants(ctx, "grant", [client(ctx).grant(kind, name, tenant)])


@grants.command("list")
def grants_list(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Argument(help="model or deployment")] = None,
    name: Annotated[str | None, typer.Argument()] = None,
) -> None:
    """Grants of one resource, or every grant your tenant gave and received."""
    c = client(ctx)
    if kind is not None:
        if name is None:
            raise typer.BadParameter("give both KIND and NAME, or neither")
        _show_grants(ctx, f"grants of {kind} {name}", c.list_grants(kind, name))
        return
    given, received = c.tenant_grants()
    _show_grants(ctx, "grants given and received", given + received)


@grants.command("revoke")
def grants_revoke(ctx: typer.Context, kind: Kind, name: str, tenant: str) -> None:
    client(ctx).revoke_grant(kind, name, tenant)
    typer.echo(f"{kind} {name} is no longer shared with {tenant}")


# -- audit -----------------------------------------------------------------------------
def audit(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this key name.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Prefix: POST, 'DELETE /api/v1/models'.")
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="ISO time (UTC if no offset).")] = None,
    until: Annotated[datetime | None, typer.Option(help="ISO time, exclusive.")] = None,
    limit: Annotated[int, typer.Option(help="Most entries to show.", min=1)] = 50,
) -> None:
    """The audit log of mutating calls, newest first (admin)."""
    found = client(ctx).audit(
        tenant=tenant, actor=actor, action=action, since=since, until=until,
        page_size=min(limit, 1000),
    )  # fmt: skip
    items = list(islice(found, limit))
    if not emit(ctx, items):
        table("audit log", ["time", "tenant", "actor", "action", "target", "status", "client"],
              [(_when(e.at), e.tenant, e.actor, e.action, e.target, e.status, e.client)
               for e in items])  # fmt: skip


# -- serve's safety check ------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(settings: Settings, insecure: bool) -> None:
    """Without auth, ``serve`` binds loopback only, unless told ``--insecure``."""
    if settings.auth or insecure or is_loopback(settings.host):
        return
    err_console.print(
        f"[red]error[/red]: refusing to listen on {escape(settings.host)} without authentication:"
        " anyone who can reach it could use, change and delete every model.\n"
        "Turn auth on (MODELPLANE_AUTH=true; make the first admin key with"
        " `modelplane keys create --role admin --local`), bind 127.0.0.1, or pass --insecure.",
        soft_wrap=True,
    )
    raise typer.Exit(2)
