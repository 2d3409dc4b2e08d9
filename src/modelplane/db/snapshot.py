"""Consistent database snapshots for ``modelplane backup``, and loading them back.

SQLite: the sqlite3 online backup API copies the database in one step under a
read lock, so the copy is a consistent snapshot even while a server writes.

PostgreSQL (and any other backend): every table's rows as JSON lines, read
in one REPEATABLE READ, read-only transaction (one consistent snapshot),
through SQLAlchemy reflection, so new tables (auth, future migrations) are
covered without a list here. We chose this over ``pg_dump``: no client binary
that must match the server's major version, no superuser-only objects, and the
same file restores into SQLite or PostgreSQL alike. Loading recreates the
schema at the snapshot's Alembic revision, inserts the rows in foreign-key
order, moves sequences past the restored ids, then upgrades to head.

Rows format: a line ``{"table": name, "columns": [...], "kinds": [...]}``
starts each table; each following line is one row as a JSON array. Kinds say
how a value was written: ``datetime`` (ISO 8601, UTC), ``bytes`` (base64),
``decimal`` (string), anything else as JSON.
"""

from __future__ import annotations

import base64
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Time,
    delete,
    select,
    text,
)

from modelplane.db.engine import make_engine, upgrade

SQLITE = "sqlite"
ROWS = "rows"
VERSION_TABLE = "alembic_version"
_BATCH = 1000


@dataclass(frozen=True)
class Snapshot:
    kind: str  # SQLITE (a database file) or ROWS (JSON lines)
    path: Path
    revision: str | None  # Alembic revision the rows belong to


def take(engine: Engine, dest_dir: Path) -> Snapshot:
    """Snapshot the database behind ``engine`` into ``dest_dir``."""
    if engine.dialect.name == "sqlite":
        return _sqlite_snapshot(engine, dest_dir / "modelplane.db")
    path = dest_dir / "rows.jsonl"
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            revision = write_rows(conn, path)
    return Snapshot(ROWS, path, revision)


def _sqlite_snapshot(engine: Engine, dest: Path) -> Snapshot:
    database = engine.url.database
    if not database or database == ":memory:":
        raise ValueError("cannot back up an in-memory SQLite database")
    src = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)  # all pages in one step: one consistent snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        row = dst.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    finally:
        src.close()
        dst.close()
    return Snapshot(SQLITE, dest, row[0] if row else None)


def write_rows(conn: Connection, path: Path) -> str | None:
    """Every table's rows as JSON lines; returns the Alembic revision."""
    meta = MetaData()
    meta.reflect(conn)
    revision = None
    with open(path, "wb") as out:
        for table in meta.sorted_tables:
            kinds = [_kind(c.type) for c in table.columns]
            head = {"table": table.name, "columns": [c.name for c in table.columns], "kinds": kinds}
            out.write(orjson.dumps(head) + b"\n")
            result = conn.execution_options(yield_per=_BATCH).execute(select(table))
            for row in result:
                values = [_encode(v, k) for v, k in zip(row, kinds, strict=True)]
                out.write(orjson.dumps(values) + b"\n")
                if table.name == VERSION_TABLE:
                    revision = str(row[0])
    return revision


def load(snapshot: Snapshot, engine: Engine) -> None:
    """Fill an empty database from a snapshot, then upgrade it to this code's head."""
    target = engine.url.database if engine.dialect.name == "sqlite" else None
    if snapshot.kind == SQLITE and target and not Path(target).exists():
        shutil.copyfile(snapshot.path, target)  # SQLite into a new SQLite file: as it was
        upgrade(engine)
        return
    if snapshot.kind == SQLITE:
        source = make_engine(f"sqlite:///{snapshot.path}")
        try:
            with source.connect() as conn:
                converted = snapshot.path.with_suffix(".jsonl")
                revision = write_rows(conn, converted)
        finally:
            source.dispose()
        snapshot = Snapshot(ROWS, converted, revision)
    if snapshot.revision is None:
        raise ValueError("the snapshot has no schema revision (alembic_version is empty)")
    try:
        upgrade(engine, snapshot.revision)
    except Exception as exc:
        raise ValueError(
            f"cannot recreate schema revision {snapshot.revision!r} (a backup from a newer "
            f"modelplane?): {exc}"
        ) from exc
    meta = MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for table in reversed(meta.sorted_tables):  # rows a migration seeded
            if table.name != VERSION_TABLE:
                conn.execute(delete(table))
        for table, columns, kinds, rows in _read_rows(snapshot.path, meta):
            conn.execute(table.insert(), [_decode_row(columns, kinds, r) for r in rows])
        if engine.dialect.name == "postgresql":
            _advance_sequences(conn, meta)
    upgrade(engine)


def _read_rows(
    path: Path, meta: MetaData
) -> Iterator[tuple[Table, list[str], list[str], list[list[Any]]]]:
    table: Table | None = None
    columns: list[str] = []
    kinds: list[str] = []
    batch: list[list[Any]] = []
    with open(path, "rb") as fh:
        for line in fh:
            item = orjson.loads(line)
            if isinstance(item, dict):
                if table is not None and batch:
                    yield table, columns, kinds, batch
                name = str(item["table"])
                batch, columns, kinds = [], list(item["columns"]), list(item["kinds"])
                table = None if name == VERSION_TABLE else meta.tables.get(name)
                if table is None and name != VERSION_TABLE:
                    raise ValueError(f"the snapshot has a table {name!r} this schema lacks")
                continue
            if table is not None:
                batch.append(item)
                if len(batch) >= _BATCH:
                    yield table, columns, kinds, batch
                    batch = []
    if table is not None and batch:
        yield table, columns, kinds, batch


def _advance_sequences(conn: Connection, meta: MetaData) -> None:
    """Integer ids were inserted explicitly: move each serial/identity sequence past them."""
    quote = conn.dialect.identifier_preparer.quote
    for table in meta.sorted_tables:
        for col in table.primary_key.columns:
            if not isinstance(col.type, Integer):
                continue
            seq = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": col.name}
            ).scalar()
            if seq:
                top = f"SELECT COALESCE(MAX({quote(col.name)}), 0) + 1 FROM {quote(table.name)}"
                conn.execute(text(f"SELECT setval(:seq, ({top}), false)"), {"seq": seq})


def _kind(sqltype: Any) -> str:
    if isinstance(sqltype, DateTime):
        return "datetime"
    if isinstance(sqltype, Date):
        return "date"
    if isinstance(sqltype, Time):
        return "time"
    if isinstance(sqltype, LargeBinary):
        return "bytes"
    if isinstance(sqltype, JSON):
        return "json"
    if isinstance(sqltype, Numeric) and getattr(sqltype, "asdecimal", False):
        return "decimal"
    return "plain"


def _encode(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "datetime" and isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite keeps UTC naive
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _decode_row(columns: list[str], kinds: list[str], row: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind, value in zip(columns, kinds, row, strict=True):
        if value is not None and kind == "datetime":
            value = datetime.fromisoformat(value).astimezone(UTC)
        elif value is not None and kind == "date":
            value = date.fromisoformat(value)
        elif value is not None and kind == "time":
            value = time.fromisoformat(value)
        elif value is not None and kind == "bytes":
            value = base64.b64decode(value)
        elif value is not None and kind == "decimal":
            value = Decimal(value)
        out[name] = value
    return out
