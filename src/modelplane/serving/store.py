"""SQL persistence of deployment specs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelplane.db import utcnow, writer
from modelplane.errors import Conflict, NotFound
from modelplane.serving.tables import DeploymentRow


@dataclass(frozen=True)
class StoredDeployment:
    tenant: str
    name: str
    model: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def _out(row: DeploymentRow) -> StoredDeployment:
    return StoredDeployment(
        row.tenant, row.name, row.model, dict(row.config), row.created_at, row.updated_at
    )


def _find(s: Session, tenant: str, name: str) -> DeploymentRow | None:
    query = select(DeploymentRow).where(DeploymentRow.tenant == tenant, DeploymentRow.name == name)
    return s.scalars(query).one_or_none()


def _get(s: Session, tenant: str, name: str) -> DeploymentRow:
    row = _find(s, tenant, name)
    if row is None:
        raise NotFound(f"deployment {name!r} not found")
    return row


class DeploymentStore:
    def __init__(self, engine: Engine) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)

    def create(
        self, tenant: str, name: str, model: str, config: dict[str, Any]
    ) -> StoredDeployment:
        try:
            with self._write() as s, s.begin():
                if _find(s, tenant, name) is not None:
                    raise Conflict(f"deployment {name!r} already exists")
                row = DeploymentRow(tenant=tenant, name=name, model=model, config=config)
                s.add(row)
                s.flush()
                return _out(row)
        except IntegrityError as exc:
            raise Conflict(f"deployment {name!r} already exists") from exc

    def update(
        self, tenant: str, name: str, model: str, config: dict[str, Any]
    ) -> StoredDeployment:
        with self._write() as s, s.begin():
            row = _get(s, tenant, name)
            row.model, row.config, row.updated_at = model, config, utcnow()
            s.flush()
            return _out(row)

    def delete(self, tenant: str, name: str) -> None:
        with self._write() as s, s.begin():
            s.delete(_get(s, tenant, name))

    def all(self) -> list[StoredDeployment]:
        with self._read() as s:
            rows = s.scalars(
                select(DeploymentRow).order_by(DeploymentRow.tenant, DeploymentRow.name)
            )
            return [_out(r) for r in rows]
