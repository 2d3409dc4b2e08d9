"""Notifications: Alertmanager's webhook JSON, posted with retries; and a log line.

``message(...)`` builds the body Alertmanager's webhook receiver sends
(version "4"), so anything that takes Alertmanager webhooks takes ours.
``WebhookNotifier`` keeps one queue and one sender task per URL: a slow or
failing receiver delays only its own messages, in order, and never the event
loop or the evaluator (``notify`` only enqueues). Failed posts (connection
errors, 5xx, 429) are retried with exponential backoff, ``attempts`` times in
all; other 4xx answers are not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from modelplane import __version__
from modelplane.monitoring.alerts.state import Instance

log = logging.getLogger("modelplane.alerts")
RECEIVER = "modelplane"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt for alerts still firing
QUEUE_SIZE = 1000


def safe_url(url: str) -> str:
    """The URL without credentials or query (webhook URLs often carry a token) for logs."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _common(dicts: Sequence[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def message(
    status: str, rule: str, alerts: Sequence[Instance], external_url: str,
    receiver: str = RECEIVER,
) -> dict[str, Any]:  # fmt: skip
    """One webhook body for ``alerts`` of one rule that all just became ``status``."""
    group = {"alertname": rule}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{rule}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": [
            {
                "status": status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": _rfc3339(a.fired_at or a.active_at),
                "endsAt": _rfc3339(a.resolved_at) if a.resolved_at is not None else ZERO_TIME,
                "generatorURL": f"{external_url}/api/v1/alerts/rules/{rule}",
                "fingerprint": a.fingerprint,
            }
            for a in alerts
        ],
    }


class Notifier(Protocol):
    def notify(self, body: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class LogNotifier:
    """A log line per notification: WARNING when firing, INFO when resolved."""

    def notify(self, body: dict[str, Any]) -> None:
        level = logging.WARNING if body["status"] == "firing" else logging.INFO
        for a in body["alerts"]:
            labels = ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()))
            summary = a["annotations"].get("summary", "")
            log.log(level, "alert %s %s {%s} %s", a["status"], a["labels"]["alertname"],
                    labels, summary)  # fmt: skip

    async def close(self) -> None:
        return None


class WebhookNotifier:
    """Posts each body to every URL; ``start()`` inside the running event loop."""

    def __init__(
        self,
        urls: Sequence[str],
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self.urls = list(urls)
        self.attempts, self.backoff, self.max_backoff = max(1, attempts), backoff, max_backoff
        self.timeout = timeout
        self.delivered = 0  # bodies a receiver accepted (2xx), for tests and stats
        self.failed = 0  # bodies given up on
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        headers = {"User-Agent": f"modelplane/{__version__}"}
        self._http = httpx.AsyncClient(timeout=self.timeout, headers=headers)
        for url in self.urls:
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
            self._queues[url] = queue
            self._tasks.append(asyncio.create_task(self._sender(url, queue)))

    def notify(self, body: dict[str, Any]) -> None:
        for url, queue in self._queues.items():
            try:
                queue.put_nowait(body)
            except asyncio.QueueFull:
                self.failed += 1
                log.error(
                    "alert webhook %s: %d messages queued, dropping one", safe_url(url), QUEUE_SIZE
                )

    async def _sender(self, url: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            body = await queue.get()
            try:
                await self._deliver(url, body)
            finally:
                queue.task_done()

    async def _deliver(self, url: str, body: dict[str, Any]) -> None:
        assert self._http is not None
        for attempt in range(1, self.attempts + 1):
            why = ""
            try:
                resp = await self._http.post(url, json=body)
                if resp.is_success:
                    self.delivered += 1
                    return
                why = f"answered {resp.status_code}"
                if resp.status_code < 500 and resp.status_code != 429:
                    break  # the receiver refuses this body: sending it again will not help
            except httpx.HTTPError as exc:
                why = f"failed: {type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay *= random.uniform(0.9, 1.1)  # noqa: S311 (spread retries, not crypto)
                log.info(
                    "alert webhook %s %s; retry %d in %.2f s", safe_url(url), why, attempt, delay
                )
                await asyncio.sleep(delay)
        self.failed += 1
        log.error("alert webhook %s %s; gave up on a %s message after %d attempt(s)",
                  safe_url(url), why, body.get("status"), attempt)  # fmt: skip

    async def close(self, grace: float = 5.0) -> None:
        """Let queued messages go out for up to ``grace`` seconds, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(q.join() for q in self._queues.values())), grace
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._http is not None:
            await self._http.aclose()
