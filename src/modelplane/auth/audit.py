"""The audit log: one row per mutating call, appended off the event loop.

``record`` only puts a dict on a queue; a background thread writes batches of
rows and ``stop`` flushes what is left (on shutdown). Rows are never updated
or deleted: this module has no such operation, and no route offers one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from modelplane.auth.tables import AuditRow
from modelplane.db import utcnow
from modelplane.errors import BadRequest
from modelplane.registry.sql_store import decode_token, encode_token
from modelplane.schemas.auth import AuditEntry

log = logging.getLogger("modelplane.audit")
BATCH = 500
_STOP = None
FIELDS = ("tenant", "actor", "key_id", "action", "target", "client")
LIMITS = {"tenant": 64, "actor": 128, "key_id": 32, "action": 300, "target": 1000, "client": 64}


def entry(
    tenant: str, actor: str, key_id: str, action: str, target: str, status: int, client: str
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": tenant, "actor": actor, "key_id": key_id, "action": action, "target": target,
        "client": client,
    }  # fmt: skip
    row = {k: str(v)[: LIMITS[k]] for k, v in row.items()}
    row["status"] = status
    row["at"] = utcnow()
    return row


def _out(r: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=r.id, at=r.at, tenant=r.tenant, actor=r.actor, key_id=r.key_id, action=r.action,
        target=r.target, status=r.status, client=r.client,
    )  # fmt: skip


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine)
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        """Queue a row (never blocks); the writer thread starts on first use."""
        if self._thread is None:
            self.start()
        self._queue.put(row)

    def append(self, row: dict[str, Any]) -> None:
        """Write a row now (CLI commands that open the database directly)."""
        self._write([row])

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write every queued row, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            stop = first is _STOP
            batch = [] if first is None else [first]
            while len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if batch:
                self._write_retrying(batch)
            if stop:
                return

    def _write_retrying(self, rows: list[dict[str, Any]]) -> None:
        for attempt in range(5):
            try:
                self._write(rows)
                return
            except SQLAlchemyError as exc:
                log.warning("audit write failed (attempt %d): %s", attempt + 1, exc)
                time.sleep(0.2 * 2**attempt)
        log.error("dropped %d audit rows after repeated failures: %s", len(rows), rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(AuditRow), rows)

    # -- reading ---------------------------------------------------------------
    def query(
        self,
        *,
        tenant: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        """Newest first. ``action`` matches a prefix (``POST``, ``DELETE /api/v1/models``)."""
        q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit + 1)
        if tenant:
            q = q.where(AuditRow.tenant == tenant)
        if actor:
            q = q.where(AuditRow.actor == actor)
        if action:
            q = q.where(AuditRow.action.startswith(action, autoescape=True))
        if since:
            q = q.where(AuditRow.at >= since)
        if until:
            q = q.where(AuditRow.at < until)
        after = decode_token(page_token)
        if after is not None:
            if not isinstance(after, int):
                raise BadRequest("invalid page_token")
            q = q.where(AuditRow.id < after)
        with self._read() as s:
            rows = list(s.scalars(q))
        more = len(rows) > limit
        rows = rows[:limit]
        return [_out(r) for r in rows], encode_token(rows[-1].id) if more else None
