"""Sharing: an owner tenant lets another tenant use one of its models or deployments.

The grantee addresses the resource as ``<owner>~<name>``: ``~`` is allowed in
neither tenant nor resource names, so the form never collides with a name of
the grantee's own, and it passes unchanged through URL paths (``~`` is
unreserved), tritonclient, TF Serving clients and the openai SDK.

- a deployment grant: inference (every protocol) and protocol metadata on
  ``<owner>~<deployment>``;
- a model grant: the grantee may deploy ``<owner>~<model>[@version|@alias]``
  in its own tenant (the deployment follows the owner's aliases).

Grants go with their resource: deleting a model or deployment deletes its
grants, and creating one clears any left under that name (by another server
process, or from before this rule), so a new resource that happens to reuse a
name is never shared by accident.

Revoking takes effect within the snapshot's ttl in every process (at once in
the one that revoked); a grantee deployment of a revoked model stops serving
at its next check.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from modelplane.auth.cache import Snapshot
from modelplane.auth.tables import GrantRow
from modelplane.auth.tenants import check_tenant
from modelplane.db import utcnow, writer
from modelplane.errors import Conflict, InvalidInput, NotFound
from modelplane.schemas.auth import Grant

SEP = "~"
KINDS = ("model", "deployment")
Key = tuple[str, str, str, str]  # owner, kind, name, grantee


def split_shared(name: str) -> tuple[str, str] | None:
    """``(owner, name)`` of ``owner~name``; None for a plain name."""
    owner, sep, rest = name.partition(SEP)
    if not sep or not owner or not rest:
        return None
    return owner, rest


def granted(engine: Engine, grantee: str, kind: str, owner: str, name: str) -> bool:
    """``Grants.allows`` straight from the database (one row), for job processes."""
    q = select(GrantRow.id).where(
        GrantRow.owner == owner, GrantRow.kind == kind, GrantRow.name == name,
        GrantRow.grantee == grantee,
    )  # fmt: skip
    with engine.connect() as c:
        return c.execute(q.limit(1)).first() is not None


def _out(r: GrantRow) -> Grant:
    return Grant(
        owner=r.owner, kind=r.kind, name=r.name, grantee=r.grantee,
        created_by=r.created_by, created_at=r.created_at,
    )  # fmt: skip


class Grants:
    def __init__(self, engine: Engine, ttl: float) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)
        self._snapshot: Snapshot[frozenset[Key]] = Snapshot(self._load, ttl)

    def _load(self) -> frozenset[Key]:
        with self._read() as s:
            rows = s.execute(select(GrantRow.owner, GrantRow.kind, GrantRow.name, GrantRow.grantee))
            return frozenset((o, k, n, g) for o, k, n, g in rows)

    def allows(self, grantee: str, kind: str, owner: str, name: str) -> bool:
        """May ``grantee`` use ``owner``'s ``kind`` ``name``? (in memory; hot-path safe)"""
        return (owner, kind, name, grantee) in self._snapshot.get()

    def create(self, owner: str, kind: str, name: str, grantee: str, actor: str) -> Grant:
        """The grantee's existence is not checked, so no tenant name is ever revealed."""
        check_tenant(grantee)
        if grantee == owner:
            raise InvalidInput("a tenant cannot grant a resource to itself")
        try:
            with self._write() as s, s.begin():
                row = GrantRow(
                    owner=owner, kind=kind, name=name, grantee=grantee, created_by=actor,
                    created_at=utcnow(),
                )  # fmt: skip
                s.add(row)
                s.flush()
                out = _out(row)
        except IntegrityError as exc:
            raise Conflict(f"{kind} {name!r} is already shared with {grantee!r}") from exc
        self._snapshot.reload()
        return out

    def list_for(self, owner: str, kind: str, name: str) -> list[Grant]:
        q = select(GrantRow).where(
            GrantRow.owner == owner, GrantRow.kind == kind, GrantRow.name == name
        )
        with self._read() as s:
            return [_out(r) for r in s.scalars(q.order_by(GrantRow.grantee))]

    def list_tenant(self, tenant: str) -> tuple[list[Grant], list[Grant]]:
        """(grants given by ``tenant``, grants received by it)."""
        with self._read() as s:
            given = s.scalars(
                select(GrantRow).where(GrantRow.owner == tenant).order_by(GrantRow.id)
            )
            got = s.scalars(
                select(GrantRow).where(GrantRow.grantee == tenant).order_by(GrantRow.id)
            )
            return [_out(r) for r in given], [_out(r) for r in got]

    def revoke(self, owner: str, kind: str, name: str, grantee: str) -> None:
        with self._write() as s, s.begin():
            gone = s.execute(
                delete(GrantRow).where(
                    GrantRow.owner == owner,
                    GrantRow.kind == kind,
                    GrantRow.name == name,
                    GrantRow.grantee == grantee,
                )
            )
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"{kind} {name!r} is not shared with {grantee!r}")
        self._snapshot.reload()

    def forget(self, owner: str, kind: str, name: str) -> int:
        """Delete every grant on ``owner``'s ``kind`` ``name`` (it was deleted or is new)."""
        with self._write() as s, s.begin():
            gone = s.execute(
                delete(GrantRow).where(
                    GrantRow.owner == owner, GrantRow.kind == kind, GrantRow.name == name
                )
            )
            count = int(gone.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            self._snapshot.reload()
        return count
