"""The evaluator: every ``interval`` seconds, sample the metrics, check every rule, notify.

``Evaluator.evaluate()`` is one synchronous round (tests call it with a fake
clock); the background task runs it in a thread so SQL reads and sampling
never hold up the event loop, then hands each notification to the notifiers
(which only enqueue). A rule that fails to evaluate is logged and skipped;
the loop never dies of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from modelplane.monitoring.alerts.conditions import (
    REQUESTS,
    STORED_BYTES,
    Quotas,
    evaluate,
    longest_window,
)
from modelplane.monitoring.alerts.notify import Notifier, message
from modelplane.monitoring.alerts.rules import RuleBook
from modelplane.monitoring.alerts.state import Instance, Notice, Tracker
from modelplane.monitoring.alerts.window import History, Snapshot
from modelplane.schemas.alerts import Alert, AlertList, AlertRuleSpec, Quota

log = logging.getLogger("modelplane.alerts")
QuotaSource = Callable[[set[str]], Quotas]  # the quotas of these tenants


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def to_alert(a: Instance) -> Alert:
    return Alert(
        rule=a.rule, state=a.state, severity=a.severity, value=a.value, labels=a.labels,
        annotations=a.annotations, fingerprint=a.fingerprint, since=_utc(a.since),
        active_at=_utc(a.active_at), fired_at=_utc(a.fired_at) if a.fired_at else None,
        resolved_at=_utc(a.resolved_at) if a.resolved_at else None,
    )  # fmt: skip


class Evaluator:
    def __init__(
        self,
        rules: RuleBook,
        sample: Callable[[], Snapshot],
        notifiers: Sequence[Notifier],
        *,
        interval: float = 15.0,
        quotas: QuotaSource | None = None,
        external_url: str = "",
        resolved_retention: float = 3600.0,
        max_samples: int = 240,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules, self.sample, self.notifiers = rules, sample, list(notifiers)
        self.interval, self.quotas, self.external_url = interval, quotas, external_url
        self.clock = clock
        self.tracker = Tracker(resolved_retention)
        self.history = History(clock(), max_samples)
        self.evaluated_at: float | None = None
        self._lock = threading.Lock()  # one round at a time (the loop and a manual call)
        self._task: asyncio.Task[None] | None = None

    # -- one round -----------------------------------------------------------------
    def evaluate(self, now: float | None = None) -> list[Notice]:
        """Sample, check every rule, move the states; returns the notifications due."""
        with self._lock:
            now = self.clock() if now is None else now
            rules: list[AlertRuleSpec] = list(self.rules.all())
            self.history.add(now, self.sample(), longest_window(rules) + 2 * self.interval)
            quotas = self._quotas(rules)
            notices = self.tracker.forget({r.name for r in rules}, now)
            for rule in rules:
                try:
                    holding = evaluate(rule, self.history, quotas)
                except Exception:  # a bug in one rule's maths must not stop the others
                    log.exception("alert rule %s could not be evaluated", rule.name)
                    continue
                notices += self.tracker.update(rule, holding, now)
            self.evaluated_at = now
            return notices

    def _quotas(self, rules: Iterable[AlertRuleSpec]) -> Quotas:
        if self.quotas is None or not any(isinstance(r.condition, Quota) for r in rules):
            return Quotas()
        seen = {dict(k).get("tenant", "") for k in self.history.current(REQUESTS)}
        seen |= {dict(k).get("tenant", "") for k in self.history.current(STORED_BYTES)}
        return self.quotas(seen - {""})

    def dispatch(self, notices: Sequence[Notice]) -> None:
        """One message per rule and status, to every notifier (they only enqueue)."""
        batches: dict[tuple[str, str], list[Instance]] = {}
        for n in notices:
            batches.setdefault((n.alert.rule, n.status), []).append(n.alert)
        for (rule, status), alerts in batches.items():
            body = message(status, rule, alerts, self.external_url)
            for notifier in self.notifiers:
                try:
                    notifier.notify(body)
                except Exception:
                    log.exception("alert notifier %r failed", notifier)

    def alerts(self, visible: Callable[[dict[str, str]], bool] | None = None) -> AlertList:
        listed = [
            to_alert(a) for a in self.tracker.alerts() if visible is None or visible(a.labels)
        ]
        at = _utc(self.evaluated_at) if self.evaluated_at is not None else None
        return AlertList(alerts=listed, evaluated_at=at)

    # -- the background task -----------------------------------------------------
    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.dispatch(await asyncio.to_thread(self.evaluate))
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        for notifier in self.notifiers:
            start: Any = getattr(notifier, "start", None)
            if start is not None:
                start()
        self._task = asyncio.create_task(self._run(), name="alert-evaluator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for notifier in self.notifiers:
            await notifier.close()
