"""SQL persistence of dataset records (SQLite and PostgreSQL); the bytes live in the blob store."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelplane.datasets.tables import DatasetRow
from modelplane.db import writer
from modelplane.errors import Conflict, NotFound
from modelplane.registry.sql_store import decode_token, encode_token
from modelplane.schemas.datasets import Dataset, DatasetSchema


class NewDataset(BaseModel):
    """What the store needs to record a dataset whose blob is already durable."""

    name: str
    format: str
    sha256: str
    size: int
    data_schema: DatasetSchema
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


def _out(row: DatasetRow) -> Dataset:
    return Dataset(
        name=row.name,
        format=row.format,
        sha256=row.sha256,
        size=row.size,
        schema_=DatasetSchema.model_validate(row.data_schema),
        description=row.description,
        tags=row.tags,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class DatasetStore:
    """Every method is scoped to a tenant: another tenant's dataset is ``NotFound``."""

    def __init__(self, engine: Engine) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)

    @staticmethod
    def _row(s: Session, tenant: str, name: str) -> DatasetRow:
        row = s.scalars(
            select(DatasetRow).where(DatasetRow.tenant == tenant, DatasetRow.name == name)
        ).one_or_none()
        if row is None:
            raise NotFound(f"dataset {name!r} not found")
        return row

    def create(self, tenant: str, new: NewDataset, actor: str) -> Dataset:
        conflict = f"dataset {new.name!r} already exists"
        try:
            with self._write() as s, s.begin():
                exists = s.scalar(
                    select(DatasetRow.id).where(
                        DatasetRow.tenant == tenant, DatasetRow.name == new.name
                    )
                )
                if exists is not None:
                    raise Conflict(conflict)
                row = DatasetRow(
                    tenant=tenant,
                    name=new.name,
                    format=new.format,
                    sha256=new.sha256,
                    size=new.size,
                    data_schema=new.data_schema.model_dump(mode="json"),
                    description=new.description,
                    tags=new.tags,
                    created_by=actor,
                )
                s.add(row)
                s.flush()
                return _out(row)
        except IntegrityError as exc:  # a concurrent create won the unique constraint
            raise Conflict(conflict) from exc

    def get(self, tenant: str, name: str) -> Dataset:
        with self._read() as s:
            return _out(self._row(s, tenant, name))

    def exists(self, tenant: str, name: str) -> bool:
        with self._read() as s:
            q = select(DatasetRow.id).where(DatasetRow.tenant == tenant, DatasetRow.name == name)
            return s.scalar(q) is not None

    def list(
        self,
        tenant: str,
        *,
        prefix: str = "",
        limit: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[Dataset], str | None]:
        """By name; ``(items, next_page_token)`` with ``None`` on the last page."""
        q: Select[Any] = select(DatasetRow).where(DatasetRow.tenant == tenant)
        if prefix:
            q = q.where(DatasetRow.name.startswith(prefix, autoescape=True))
        after = decode_token(page_token)
        if after is not None:
            q = q.where(DatasetRow.name > str(after))
        q = q.order_by(DatasetRow.name).limit(limit + 1)
        with self._read() as s:
            rows = s.scalars(q).all()
        items = [_out(r) for r in rows[:limit]]
        token = encode_token(items[-1].name) if len(rows) > limit else None
        return items, token

    def delete(self, tenant: str, name: str) -> None:
        """Forget the record; the blob stays until garbage collection finds it unreferenced."""
        with self._write() as s, s.begin():
            s.delete(self._row(s, tenant, name))

    def referenced_blobs(self) -> set[str]:
        with self._read() as s:
            return set(s.scalars(select(DatasetRow.sha256).distinct()))
