"""Short-lived in-memory copies that keep SQL off the hot path.

``KeyCache`` remembers verified keys for ``ttl`` seconds: a request with a
known key costs one dict lookup. A revoked key therefore keeps working for at
most ``ttl`` seconds in processes that had it cached (at once in the process
that revoked it). ``Snapshot`` holds a small table (grants, quotas) and
reloads it in a worker thread once it is older than ``ttl``, serving the old
copy meanwhile, so another process's change shows within about ``ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from modelplane.auth.keys import Principal
from modelplane.db import utcnow

T = TypeVar("T")
log = logging.getLogger("modelplane.auth")


class KeyCache:
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[0]

    def put(self, key: str, who: Principal) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare; a cleared cache only costs a few SQL lookups
        until = time.monotonic() + self.ttl
        if who.expires_at is not None:
            until = min(until, time.monotonic() + _seconds_until(who.expires_at))
        self._entries[key] = (who, until)

    def drop(self, key_id: str) -> None:
        """Forget a key at once (after a revoke in this process)."""
        for k, (who, _) in list(self._entries.items()):
            if who.key_id == key_id:
                self._entries.pop(k, None)


def _seconds_until(when: datetime) -> float:
    return (when - utcnow()).total_seconds()


class Snapshot(Generic[T]):
    def __init__(self, load: Callable[[], T], ttl: float) -> None:
        self._load = load
        self.ttl = ttl
        self.value = load()
        self._at = time.monotonic()
        self._lock = threading.Lock()
        self._busy = False

    def get(self) -> T:
        if time.monotonic() - self._at > self.ttl and not self._busy:
            self._refresh_soon()
        return self.value

    def reload(self) -> None:
        """Load now, in the calling thread (after a change made by this process)."""
        with self._lock:
            self.value = self._load()
            self._at = time.monotonic()

    def _refresh_soon(self) -> None:
        self._busy = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._guarded_reload()
            return
        loop.run_in_executor(None, self._guarded_reload)

    def _guarded_reload(self) -> None:
        try:
            self.reload()
        except (SQLAlchemyError, OSError):  # keep serving the old copy; retry after ttl
            log.exception("reloading a snapshot failed; keeping the previous copy")
            self._at = time.monotonic()
        finally:
            self._busy = False
