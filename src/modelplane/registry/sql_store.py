"""The SQLAlchemy 2 implementation of ``RegistryStore`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelplane.db import utcnow, writer
from modelplane.errors import BadRequest, Conflict, NotFound
from modelplane.registry.names import MAX_VERSION, ModelRef, parse_ref
from modelplane.registry.store import RegistryStore
from modelplane.registry.tables import AliasEventRow, AliasRow, ModelRow, ParentLink, VersionRow
from modelplane.schemas.registry import (
    Alias,
    AliasEvent,
    Artifact,
    Lineage,
    LineageNode,
    Model,
    NewVersion,
    Signature,
    Version,
)


def encode_token(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_token(token: str | None) -> Any:
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError as exc:
        raise BadRequest("invalid page_token") from exc
    if isinstance(key, bool) or (isinstance(key, int) and not 0 <= key <= MAX_VERSION):
        raise BadRequest("invalid page_token")
    return key


def _tag_filter(column: Any, tag: str) -> Any:
    key, sep, value = tag.partition("=")
    if sep:
        return column[key].as_string() == value
    return column[key].as_string().is_not(None)


class SqlRegistryStore(RegistryStore):
    def __init__(self, engine: Engine) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._write() as s, s.begin():
            yield s

    # -- helpers -------------------------------------------------------------
    @staticmethod
    def _model_row(s: Session, tenant: str, name: str) -> ModelRow:
        row = s.scalars(
            select(ModelRow).where(ModelRow.tenant == tenant, ModelRow.name == name)
        ).one_or_none()
        if row is None:
            raise NotFound(f"model {name!r} not found")
        return row

    @staticmethod
    def _latest_number(s: Session, model_id: int) -> int | None:
        return s.scalar(select(func.max(VersionRow.number)).where(VersionRow.model_id == model_id))

    def _to_model(self, s: Session, row: ModelRow, latest: int | None = -1) -> Model:
        if latest == -1:
            latest = self._latest_number(s, row.id)
        return Model(
            name=row.name,
            description=row.description,
            task=row.task,
            tags=row.tags,
            trusted=row.trusted,
            latest_version=latest,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def _version_row(self, s: Session, tenant: str, ref: ModelRef) -> tuple[ModelRow, VersionRow]:
        model = self._model_row(s, tenant, ref.model)
        q = select(VersionRow).where(VersionRow.model_id == model.id)
        if ref.version is not None:
            missing = f"version {ref.version} of model {ref.model!r} not found"
            if not 1 <= ref.version <= MAX_VERSION:
                raise NotFound(missing)
            q = q.where(VersionRow.number == ref.version)
        elif ref.alias is not None:
            q = q.join(AliasRow, AliasRow.version_id == VersionRow.id).where(
                AliasRow.model_id == model.id, AliasRow.name == ref.alias
            )
            missing = f"alias {ref.alias!r} of model {ref.model!r} not found"
        else:
            q = q.order_by(VersionRow.number.desc()).limit(1)
            missing = f"model {ref.model!r} has no versions"
        row = s.scalars(q).one_or_none()
        if row is None:
            raise NotFound(missing)
        return model, row

    def _to_versions(
        self, s: Session, model: ModelRow, rows: Sequence[VersionRow]
    ) -> list[Version]:
        ids = [r.id for r in rows]
        parents: dict[int, list[str]] = {i: [] for i in ids}
        aliases: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            q = (
                select(ParentLink.child_id, ModelRow.name, VersionRow.number)
                .join(VersionRow, VersionRow.id == ParentLink.parent_id)
                .join(ModelRow, ModelRow.id == VersionRow.model_id)
                .where(ParentLink.child_id.in_(ids))
                .order_by(ModelRow.name, VersionRow.number)
            )
            for child, name, number in s.execute(q):
                parents[child].append(f"{name}@{number}")
            aq = select(AliasRow.version_id, AliasRow.name).where(
                AliasRow.model_id == model.id, AliasRow.version_id.in_(ids)
            )
            for vid, alias in s.execute(aq.order_by(AliasRow.name)):
                aliases[vid].append(alias)
        return [
            Version(
                model=model.name,
                version=r.number,
                format=r.format,
                artifact=Artifact(
                    sha256=r.artifact_sha256,
                    size=r.artifact_size,
                    packaging=r.packaging,
                    filename=r.filename,
                    files=r.files,
                ),
                signature=Signature.model_validate(r.signature),
                params=r.params,
                metrics=r.metrics,
                tags=r.tags,
                description=r.description,
                parents=parents[r.id],
                source=r.source,
                aliases=aliases[r.id],
                created_by=r.created_by,
                created_at=r.created_at,
            )
            for r in rows
        ]

    # -- models --------------------------------------------------------------
    def create_model(
        self, tenant: str, name: str, description: str, task: str, tags: dict[str, str]
    ) -> Model:
        try:
            with self._tx() as s:
                exists = s.scalar(
                    select(ModelRow.id).where(ModelRow.tenant == tenant, ModelRow.name == name)
                )
                if exists is not None:
                    raise Conflict(f"model {name!r} already exists")
                row = ModelRow(
                    tenant=tenant, name=name, description=description, task=task, tags=tags
                )
                s.add(row)
                s.flush()
                return self._to_model(s, row, latest=None)
        except IntegrityError as exc:
            raise Conflict(f"model {name!r} already exists") from exc

    def get_model(self, tenant: str, name: str) -> Model:
        with self._read() as s:
            return self._to_model(s, self._model_row(s, tenant, name))

    def list_models(
        self,
        tenant: str,
        *,
        prefix: str = "",
        tag: str | None = None,
        task: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[Model], str | None]:
        latest = (
            select(func.max(VersionRow.number))
            .where(VersionRow.model_id == ModelRow.id)
            .scalar_subquery()
        )
        q: Select[Any] = select(ModelRow, latest).where(ModelRow.tenant == tenant)
        if prefix:
            q = q.where(ModelRow.name.startswith(prefix, autoescape=True))
        if tag:
            q = q.where(_tag_filter(ModelRow.tags, tag))
        if task:
            q = q.where(ModelRow.task == task)
        after = decode_token(page_token)
        if after is not None:
            q = q.where(ModelRow.name > str(after))
        q = q.order_by(ModelRow.name).limit(limit + 1)
        with self._read() as s:
            rows = s.execute(q).all()
            items = [self._to_model(s, r[0], latest=r[1]) for r in rows[:limit]]
        token = encode_token(items[-1].name) if len(rows) > limit else None
        return items, token

    def update_model(
        self,
        tenant: str,
        name: str,
        *,
        description: str | None = None,
        task: str | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: list[str] | None = None,
        trusted: bool | None = None,
    ) -> Model:
        with self._tx() as s:
            row = self._model_row(s, tenant, name)
            if trusted is not None:
                row.trusted = trusted
            if description is not None:
                row.description = description
            if task is not None:
                row.task = task
            if tags or remove_tags:
                merged = {**row.tags, **(tags or {})}
                for key in remove_tags or []:
                    merged.pop(key, None)
                row.tags = merged
            row.updated_at = utcnow()
            s.flush()
            return self._to_model(s, row)

    def delete_model(self, tenant: str, name: str) -> None:
        with self._tx() as s:
            row = self._model_row(s, tenant, name)
            s.execute(delete(AliasRow).where(AliasRow.model_id == row.id))
            s.delete(row)

    # -- versions ------------------------------------------------------------
    def create_version(self, tenant: str, model: str, new: NewVersion, actor: str) -> Version:
        with self._tx() as s:
            mrow = self._model_row(s, tenant, model)
            parent_ids = []
            for ref in new.parents:
                _, prow = self._version_row(s, tenant, parse_ref(ref))
                parent_ids.append(prow.id)
            # Row-locking increment: concurrent uploads get distinct consecutive numbers.
            number = s.execute(
                update(ModelRow)
                .where(ModelRow.id == mrow.id)
                .values(last_version=ModelRow.last_version + 1, updated_at=utcnow())
                .returning(ModelRow.last_version)
            ).scalar_one()
            vrow = VersionRow(
                model_id=mrow.id,
                number=number,
                format=new.format,
                artifact_sha256=new.artifact.sha256,
                artifact_size=new.artifact.size,
                packaging=new.artifact.packaging,
                filename=new.artifact.filename,
                files=new.artifact.files,
                signature=new.signature.model_dump(),
                params=new.params,
                metrics=new.metrics,
                tags=new.tags,
                source=new.source,
                description=new.description,
                created_by=actor,
            )
            s.add(vrow)
            s.flush()
            for pid in dict.fromkeys(parent_ids):
                s.add(ParentLink(child_id=vrow.id, parent_id=pid))
            s.flush()
            return self._to_versions(s, mrow, [vrow])[0]

    def get_version(self, tenant: str, ref: ModelRef) -> Version:
        with self._read() as s:
            model, row = self._version_row(s, tenant, ref)
            return self._to_versions(s, model, [row])[0]

    def list_versions(
        self,
        tenant: str,
        model: str,
        *,
        tag: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
        descending: bool = True,
    ) -> tuple[list[Version], str | None]:
        with self._read() as s:
            mrow = self._model_row(s, tenant, model)
            q = select(VersionRow).where(VersionRow.model_id == mrow.id)
            if tag:
                q = q.where(_tag_filter(VersionRow.tags, tag))
            after = decode_token(page_token)
            if after is not None:
                if not isinstance(after, int):
                    raise BadRequest("invalid page_token")
                q = q.where(VersionRow.number < after if descending else VersionRow.number > after)
            order = VersionRow.number.desc() if descending else VersionRow.number.asc()
            rows = s.scalars(q.order_by(order).limit(limit + 1)).all()
            items = self._to_versions(s, mrow, rows[:limit])
        token = encode_token(items[-1].version) if len(rows) > limit else None
        return items, token

    def update_version(
        self,
        tenant: str,
        ref: ModelRef,
        *,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: list[str] | None = None,
        description: str | None = None,
    ) -> Version:
        with self._tx() as s:
            model, row = self._version_row(s, tenant, ref)
            if metrics:
                changed = sorted(
                    k for k, v in metrics.items() if k in row.metrics and row.metrics[k] != v
                )
                if changed:
                    raise Conflict(
                        f"metrics {changed} are already recorded on version {row.number}; "
                        "recorded metrics never change"
                    )
                row.metrics = {**row.metrics, **metrics}
            if tags or remove_tags:
                merged = {**row.tags, **(tags or {})}
                for key in remove_tags or []:
                    merged.pop(key, None)
                row.tags = merged
            if description is not None:
                row.description = description
            s.flush()
            return self._to_versions(s, model, [row])[0]

    def delete_version(self, tenant: str, model: str, number: int) -> None:
        with self._tx() as s:
            _, row = self._version_row(s, tenant, ModelRef(model, version=number))
            held = s.scalars(select(AliasRow.name).where(AliasRow.version_id == row.id)).all()
            if held:
                raise Conflict(
                    f"version {number} of {model!r} is the target of alias(es) {sorted(held)}; "
                    "move or delete them first"
                )
            s.delete(row)

    # -- aliases -------------------------------------------------------------
    def _alias_out(self, model: ModelRow, row: AliasRow, number: int) -> Alias:
        return Alias(model=model.name, alias=row.name, version=number, updated_at=row.updated_at)

    def _record(
        self,
        s: Session,
        model: ModelRow,
        alias: str,
        action: str,
        old: int | None,
        new: int | None,
        actor: str,
    ) -> None:
        s.add(
            AliasEventRow(
                model_id=model.id,
                alias=alias,
                action=action,
                from_version=old,
                to_version=new,
                actor=actor,
                at=utcnow(),
            )
        )

    def _current(
        self, s: Session, model: ModelRow, alias: str
    ) -> tuple[AliasRow | None, int | None]:
        row = s.get(AliasRow, (model.id, alias))
        if row is None:
            return None, None
        return row, s.scalar(select(VersionRow.number).where(VersionRow.id == row.version_id))

    def _move(
        self, s: Session, model: ModelRow, alias: str, number: int, actor: str, action: str | None
    ) -> Alias:
        _, target = self._version_row(s, model.tenant, ModelRef(model.name, version=number))
        row, old = self._current(s, model, alias)
        now = utcnow()
        if row is None:
            row = AliasRow(model_id=model.id, name=alias, version_id=target.id, updated_at=now)
            s.add(row)
        else:
            row.version_id = target.id
            row.updated_at = now
        self._record(
            s, model, alias, action or ("set" if old is None else "move"), old, number, actor
        )
        s.flush()
        return self._alias_out(model, row, number)

    def set_alias(self, tenant: str, model: str, alias: str, version: int, actor: str) -> Alias:
        with self._tx() as s:
            return self._move(s, self._model_row(s, tenant, model), alias, version, actor, None)

    def delete_alias(self, tenant: str, model: str, alias: str, actor: str) -> None:
        with self._tx() as s:
            mrow = self._model_row(s, tenant, model)
            row, old = self._current(s, mrow, alias)
            if row is None:
                raise NotFound(f"alias {alias!r} of model {model!r} not found")
            s.delete(row)
            self._record(s, mrow, alias, "delete", old, None, actor)

    def rollback_alias(self, tenant: str, model: str, alias: str, actor: str) -> Alias:
        with self._tx() as s:
            mrow = self._model_row(s, tenant, model)
            row, _ = self._current(s, mrow, alias)
            if row is None:
                raise NotFound(f"alias {alias!r} of model {model!r} not found")
            events = s.execute(
                select(AliasEventRow.action, AliasEventRow.to_version)
                .where(AliasEventRow.model_id == mrow.id, AliasEventRow.alias == alias)
                .order_by(AliasEventRow.id)
            ).all()
            # Replay the history as a stack: set/move push, rollback pops, delete clears.
            # Versions deleted since are skipped: rollback goes to the nearest one left.
            alive = set(s.scalars(select(VersionRow.number).where(VersionRow.model_id == mrow.id)))
            stack: list[int] = []
            for action, to in events:
                if action in ("set", "move") and to is not None:
                    stack.append(to)
                elif action == "rollback" and stack:
                    stack.pop()
                elif action == "delete":
                    stack.clear()
            stack = [v for v in stack if v in alive]
            while len(stack) >= 2 and stack[-2] == stack[-1]:
                stack.pop(-2)
            if len(stack) < 2:
                raise Conflict(f"alias {alias!r} has no earlier target to roll back to")
            return self._move(s, mrow, alias, stack[-2], actor, "rollback")

    def list_aliases(self, tenant: str, model: str) -> list[Alias]:
        with self._read() as s:
            mrow = self._model_row(s, tenant, model)
            rows = s.execute(
                select(AliasRow, VersionRow.number)
                .join(VersionRow, VersionRow.id == AliasRow.version_id)
                .where(AliasRow.model_id == mrow.id)
                .order_by(AliasRow.name)
            ).all()
            return [self._alias_out(mrow, r, n) for r, n in rows]

    def alias_history(
        self,
        tenant: str,
        model: str,
        alias: str | None = None,
        *,
        limit: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[AliasEvent], str | None]:
        with self._read() as s:
            mrow = self._model_row(s, tenant, model)
            q = select(AliasEventRow).where(AliasEventRow.model_id == mrow.id)
            if alias:
                q = q.where(AliasEventRow.alias == alias)
            after = decode_token(page_token)
            if after is not None:
                if not isinstance(after, int):
                    raise BadRequest("invalid page_token")
                q = q.where(AliasEventRow.id < after)
            rows = s.scalars(q.order_by(AliasEventRow.id.desc()).limit(limit + 1)).all()
        items = [
            AliasEvent(
                id=r.id,
                model=mrow.name,
                alias=r.alias,
                action=r.action,
                from_version=r.from_version,
                to_version=r.to_version,
                actor=r.actor,
                at=r.at,
            )
            for r in rows[:limit]
        ]
        return items, (encode_token(items[-1].id) if len(rows) > limit else None)

    # -- lineage -------------------------------------------------------------
    def lineage(self, tenant: str, ref: ModelRef, max_depth: int = 50) -> Lineage:
        with self._read() as s:
            model, row = self._version_row(s, tenant, ref)
            up = self._walk(s, row.id, ParentLink.child_id, ParentLink.parent_id, max_depth)
            down = self._walk(s, row.id, ParentLink.parent_id, ParentLink.child_id, max_depth)
            return Lineage(model=model.name, version=row.number, ancestors=up, descendants=down)

    @staticmethod
    def _walk(s: Session, start: int, src: Any, dst: Any, max_depth: int) -> list[LineageNode]:
        seen = {start}
        frontier = [start]
        out: list[LineageNode] = []
        for depth in range(1, max_depth + 1):
            if not frontier:
                break
            nxt = [i for i in s.scalars(select(dst).where(src.in_(frontier))) if i not in seen]
            nxt = list(dict.fromkeys(nxt))
            seen.update(nxt)
            if nxt:
                q = (
                    select(ModelRow.name, VersionRow.number)
                    .join(ModelRow, ModelRow.id == VersionRow.model_id)
                    .where(VersionRow.id.in_(nxt))
                    .order_by(ModelRow.name, VersionRow.number)
                )
                out += [LineageNode(model=n, version=v, depth=depth) for n, v in s.execute(q)]
            frontier = nxt
        return out

    def referenced_blobs(self) -> set[str]:
        with self._read() as s:
            return set(s.scalars(select(VersionRow.artifact_sha256).distinct()))
