"""SQL job queue. Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two runners never
take the same job) and an IMMEDIATE transaction on SQLite (which serialises writers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from modelplane.db import utcnow, writer
from modelplane.errors import BadRequest, Conflict, NotFound
from modelplane.jobs.tables import JobLogRow, JobRow
from modelplane.registry.sql_store import decode_token, encode_token
from modelplane.schemas.jobs import FINAL, Job, LogLine


def to_job(row: JobRow) -> Job:
    return Job(
        id=row.id, kind=row.kind, name=row.name, state=row.state, progress=row.progress,
        message=row.message, metrics=list(row.metrics), result=dict(row.result), error=row.error,
        attempts=row.attempts, spec=dict(row.spec), created_by=row.created_by,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
    )  # fmt: skip


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._write() as s, s.begin():
            yield s

    @staticmethod
    def _row(s: Session, job_id: str, tenant: str | None = None) -> JobRow:
        row = s.get(JobRow, job_id) if len(job_id) == 32 and job_id.isalnum() else None
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound(f"job {job_id!r} not found")
        return row

    # -- client side ---------------------------------------------------------
    def submit(
        self, tenant: str, kind: str, name: str, spec: dict[str, Any], actor: str,
        max_attempts: int = 3,
    ) -> Job:  # fmt: skip
        with self._tx() as s:
            row = JobRow(
                id=uuid.uuid4().hex, tenant=tenant, kind=kind, name=name, spec=spec,
                created_by=actor, max_attempts=max_attempts, created_at=utcnow(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            return to_job(row)

    def get(self, tenant: str | None, job_id: str) -> Job:
        with self._read() as s:
            return to_job(self._row(s, job_id, tenant))

    def tenant_of(self, job_id: str) -> str:
        with self._read() as s:
            return self._row(s, job_id).tenant

    def list_jobs(
        self, tenant: str, *, state: str | None = None, kind: str | None = None,
        limit: int = 100, page_token: str | None = None,
    ) -> tuple[list[Job], str | None]:  # fmt: skip
        q = select(JobRow).where(JobRow.tenant == tenant)
        if state:
            q = q.where(JobRow.state == state)
        if kind:
            q = q.where(JobRow.kind == kind)
        after = decode_token(page_token)
        if after is not None:
            if not (isinstance(after, list) and len(after) == 2):
                raise BadRequest("invalid page_token")
            at = datetime.fromisoformat(str(after[0]))
            q = q.where(
                (JobRow.created_at < at) | ((JobRow.created_at == at) & (JobRow.id < str(after[1])))
            )
        q = q.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1)
        with self._read() as s:
            rows = s.scalars(q).all()
        items = [to_job(r) for r in rows[:limit]]
        token = None
        if len(rows) > limit:
            token = encode_token([items[-1].created_at.isoformat(), items[-1].id])
        return items, token

    def request_cancel(self, tenant: str, job_id: str) -> Job:
        """Queued jobs are cancelled at once; running ones when their runner notices."""
        with self._tx() as s:
            row = self._row(s, job_id, tenant)
            if row.state in FINAL:
                raise Conflict(f"job {job_id} already {row.state}")
            if row.state == "queued":
                row.state, row.finished_at, row.message = "cancelled", utcnow(), "cancelled"
            else:
                row.cancel_requested = True
            s.flush()
            return to_job(row)

    def logs(
        self, tenant: str | None, job_id: str, after: int = 0, limit: int = 1000
    ) -> list[LogLine]:
        with self._read() as s:
            self._row(s, job_id, tenant)
            rows = s.scalars(
                select(JobLogRow)
                .where(JobLogRow.job_id == job_id, JobLogRow.id > after)
                .order_by(JobLogRow.id)
                .limit(limit)
            ).all()
            return [LogLine(seq=r.id, at=r.at, line=r.line) for r in rows]

    # -- runner side ---------------------------------------------------------
    def claim(self, runner: str, kinds: list[str] | None = None) -> Job | None:
        """Take the oldest queued job, or None. Safe with many runners on one database."""
        with self._tx() as s:
            q = select(JobRow).where(JobRow.state == "queued")
            if kinds:
                q = q.where(JobRow.kind.in_(kinds))
            q = q.order_by(JobRow.created_at, JobRow.id).limit(1)
            if s.bind is not None and s.bind.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            row = s.scalars(q).first()
            if row is None:
                return None
            now = utcnow()
            row.state, row.runner, row.heartbeat_at = "running", runner, now
            row.attempts += 1
            row.started_at = row.started_at or now
            s.flush()
            return to_job(row)

    def heartbeat(self, job_id: str, runner: str) -> bool:
        """Record that ``runner`` still works on the job; returns True if cancel was asked."""
        with self._tx() as s:
            row = self._row(s, job_id)
            if row.runner == runner and row.state == "running":
                row.heartbeat_at = utcnow()
            return row.cancel_requested

    def report(
        self, job_id: str, *, progress: float | None = None, message: str | None = None,
        metrics: dict[str, Any] | None = None, checkpoint: str | None = None,
    ) -> None:  # fmt: skip
        with self._tx() as s:
            row = self._row(s, job_id)
            if progress is not None:
                row.progress = max(0.0, min(1.0, progress))
            if message is not None:
                row.message = message[:2000]
            if metrics is not None:
                row.metrics = [*row.metrics, metrics]
            if checkpoint is not None:
                row.checkpoint = checkpoint

    def checkpoint_of(self, job_id: str) -> str:
        with self._read() as s:
            return self._row(s, job_id).checkpoint

    def reset_metrics(self, job_id: str, keep: int) -> None:
        """On resume: keep the metrics of the epochs the checkpoint covers."""
        with self._tx() as s:
            row = self._row(s, job_id)
            row.metrics = list(row.metrics)[:keep]

    def log(self, job_id: str, lines: list[str]) -> None:
        if not lines:
            return
        with self._tx() as s:
            now = utcnow()
            s.add_all(JobLogRow(job_id=job_id, at=now, line=line[:10_000]) for line in lines)

    def finish(
        self, job_id: str, runner: str, state: str, *, result: dict[str, Any] | None = None,
        error: str = "",
    ) -> bool:  # fmt: skip
        """Final state, unless another runner took the job over meanwhile (returns False)."""
        with self._tx() as s:
            row = self._row(s, job_id)
            if row.runner != runner or row.state != "running":
                return False
            row.state, row.finished_at, row.error = state, utcnow(), error[:10_000]
            if result is not None:
                row.result = result
            if state == "succeeded":
                row.progress = 1.0
            row.message = {"succeeded": "done", "cancelled": "cancelled"}.get(state, "failed")
            return True

    def requeue_stale(self, older_than: float) -> list[str]:
        """Running jobs whose runner went quiet go back to the queue (or fail after N tries)."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        with self._tx() as s:
            rows = s.scalars(
                select(JobRow).where(JobRow.state == "running", JobRow.heartbeat_at < cutoff)
            ).all()
            for row in rows:
                if row.cancel_requested:
                    row.state, row.finished_at, row.message = "cancelled", utcnow(), "cancelled"
                elif row.attempts >= row.max_attempts:
                    row.state, row.finished_at = "failed", utcnow()
                    row.error = f"its runner stopped answering {row.attempts} times"
                else:
                    row.state, row.runner, row.message = "queued", "", "requeued: runner lost"
            return [r.id for r in rows]

    def referenced_blobs(self) -> set[str]:
        """Checkpoints, outputs and finished parts that jobs still point to."""
        with self._read() as s:
            rows = s.execute(select(JobRow.checkpoint, JobRow.result, JobRow.metrics)).all()
        out: set[str] = set()
        for checkpoint, result, metrics in rows:
            if checkpoint:
                out.add(checkpoint)
            output = (result or {}).get("output") or {}
            if isinstance(output, dict) and output.get("sha256"):
                out.add(str(output["sha256"]))
            out.update(str(m["part"]) for m in metrics or [] if isinstance(m, dict) and "part" in m)
        return out

    def fail_running_of(self, runner: str, reason: str) -> None:
        with self._tx() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.runner == runner, JobRow.state == "running")
                .values(state="queued", runner="", message=reason)
            )
