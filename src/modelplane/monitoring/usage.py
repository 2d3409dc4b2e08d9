"""Usage metering: counted in memory on the hot path, flushed to SQL in the background.

Recording API (cheap, event-loop thread or any thread):

- ``meter.record(tenant, deployment, items, compute_seconds, bytes_in, bytes_out)`` — one
  inference request; the fast path calls it for every inference protocol.
- ``meter.record_tokens(tenant, deployment, prompt_tokens, completion_tokens)`` — LLM token
  use of one request (the OpenAI completions front end calls it; it does not count a request,
  so call ``record`` as well, or let the fast path do it).

``create_app`` builds one ``UsageMeter`` and puts it on ``app.state.usage``. Totals are kept per
tenant x deployment x UTC day and added to the ``usage`` table (an upsert that adds) every
``usage_flush_seconds`` by a background thread, and once more at graceful shutdown. So a
graceful stop loses nothing and a ``kill -9`` loses at most the last flush interval. Several
server processes may share one database: each adds its own totals.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from modelplane.monitoring.usage_store import Totals, UsageStore

log = logging.getLogger("modelplane.usage")

_EPOCH = date(1970, 1, 1)
# Stored bytes are sampled at most this often (a sum over every version and dataset).
STORAGE_SAMPLE_SECONDS = 300.0


class UsageMeter:
    def __init__(
        self,
        engine: Engine,
        flush_seconds: float = 10.0,
        enabled: bool = True,
    ) -> None:
        self.store = UsageStore(engine)
        self.flush_seconds = flush_seconds
        self.enabled = enabled
        self._pending: dict[tuple[str, str, int], list[float]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._storage_sampled = 0.0

    # -- recording (hot path) -------------------------------------------------------
    def record(
        self, tenant: str, deployment: str, items: int = 0, compute_seconds: float = 0.0,
        bytes_in: int = 0, bytes_out: int = 0,
    ) -> None:  # fmt: skip
        key = (tenant, deployment, int(time.time() // 86400))
        with self._lock:
            row = self._pending.get(key)
            if row is None:
                self._pending[key] = [1, items, compute_seconds, bytes_in, bytes_out, 0, 0]
                return
            row[0] += 1
            row[1] += items
            row[2] += compute_seconds
            row[3] += bytes_in
            row[4] += bytes_out

    def record_tokens(
        self, tenant: str, deployment: str, prompt_tokens: int, completion_tokens: int
    ) -> None:
        key = (tenant, deployment, int(time.time() // 86400))
        with self._lock:
            row = self._pending.get(key)
            if row is None:
                row = self._pending[key] = [0, 0, 0.0, 0, 0, 0, 0]
            row[5] += prompt_tokens
            row[6] += completion_tokens

    # -- flushing ------------------------------------------------------------------
    def flush(self) -> int:
        """Add what was counted since the last flush to the database; returns rows written.

        On a database error the counts are put back and retried at the next flush."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return 0
            totals = [
                Totals(t, d, _EPOCH + timedelta(days=day), *_ints(v))
                for (t, d, day), v in pending.items()
            ]
            try:
                self.store.add(totals)
            except Exception:
                with self._lock:
                    for key, values in pending.items():
                        row = self._pending.setdefault(key, [0, 0, 0.0, 0, 0, 0, 0])
                        for i, value in enumerate(values):
                            row[i] += value
                raise
            return len(totals)

    def sample_storage(self, force: bool = False) -> None:
        """Record today's stored bytes per tenant (for GB-month cost)."""
        now = time.monotonic()
        if not force and now - self._storage_sampled < STORAGE_SAMPLE_SECONDS:
            return
        self._storage_sampled = now
        self.store.sample_storage(datetime.now(UTC).date())

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="usage-flush", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the flush thread and flush what is left (graceful shutdown loses nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        try:
            self.flush()
        except Exception:  # the database is gone: say what is lost rather than fail the stop
            log.exception("usage flush at shutdown failed; %d rows lost", len(self._pending))

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
                self.sample_storage()
            except Exception:  # a database hiccup: keep the counts, try again next time
                log.exception("usage flush failed")


def _ints(v: list[float]) -> tuple[int, int, float, int, int, int, int]:
    return (int(v[0]), int(v[1]), float(v[2]), int(v[3]), int(v[4]), int(v[5]), int(v[6]))
