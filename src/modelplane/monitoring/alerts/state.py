"""The alert state machine: inactive → pending → firing → resolved, per rule and series.

``Tracker.update(rule, holding, now)`` takes the series where a rule's condition
holds at ``now`` and returns the notifications that evaluation causes: one
``firing`` when an alert has held for the rule's ``for``, one ``resolved`` when
a firing alert stops holding. Pending alerts that stop holding just vanish
(nobody was told). Resolved alerts are listed for ``resolved_retention``
seconds; if the condition holds again, a new alert starts pending.
Times are plain seconds from the caller's clock, so tests drive it by hand.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Literal

from modelplane.monitoring.alerts.window import Labels
from modelplane.schemas.alerts import AlertRuleSpec, render

State = Literal["pending", "firing", "resolved"]


def fingerprint(labels: dict[str, str]) -> str:
    """A stable id of a label set (16 hex digits, like Alertmanager's)."""
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Instance:
    """One alert: a rule's condition holding for one series."""

    rule: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    state: State
    active_at: float
    since: float
    fired_at: float | None = None
    resolved_at: float | None = None
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        self.fingerprint = self.fingerprint or fingerprint(self.labels)


@dataclass(frozen=True)
class Notice:
    """A notification to send: ``status`` is what the alert just became."""

    status: Literal["firing", "resolved"]
    alert: Instance


def alert_labels(rule: AlertRuleSpec, series: Labels) -> dict[str, str]:
    # Rule labels win over series labels, as in Prometheus; name and severity over both.
    return {**dict(series), **rule.labels, "alertname": rule.name, "severity": rule.severity}


def _copy(a: Instance) -> Instance:
    return Instance(**{**a.__dict__, "labels": dict(a.labels), "annotations": dict(a.annotations)})


class Tracker:
    """Every rule's alerts. Thread-safe: the evaluator updates, API reads list."""

    def __init__(self, resolved_retention: float = 3600.0) -> None:
        self.resolved_retention = resolved_retention
        self._active: dict[str, dict[Labels, Instance]] = {}  # rule → series → pending/firing
        self._resolved: list[Instance] = []
        self._lock = threading.Lock()

    def update(self, rule: AlertRuleSpec, holding: dict[Labels, float], now: float) -> list[Notice]:
        notices: list[Notice] = []
        hold = rule.for_seconds
        with self._lock:
            active = self._active.setdefault(rule.name, {})
            for series, value in holding.items():
                labels = alert_labels(rule, series)
                notes = {k: render(v, labels, value) for k, v in rule.annotations.items()}
                a = active.get(series)
                if a is None:
                    a = Instance(
                        rule.name, rule.severity, labels, notes, value, "pending", now, now
                    )
                    active[series] = a
                else:
                    a.labels, a.annotations, a.value = labels, notes, value
                    a.severity = rule.severity
                if a.state == "pending" and now - a.active_at >= hold:
                    a.state, a.fired_at, a.since = "firing", now, now
                    notices.append(Notice("firing", _copy(a)))
            for series in [s for s in active if s not in holding]:
                gone = active.pop(series)
                if gone.state == "firing":
                    notices.append(Notice("resolved", self._resolve(gone, now)))
            self._expire(now)
        return notices

    def forget(self, keep: set[str], now: float) -> list[Notice]:
        """Drop rules not in ``keep`` (deleted); their firing alerts resolve."""
        notices: list[Notice] = []
        with self._lock:
            for name in [n for n in self._active if n not in keep]:
                for a in self._active.pop(name).values():
                    if a.state == "firing":
                        notices.append(Notice("resolved", self._resolve(a, now)))
        return notices

    def _resolve(self, a: Instance, now: float) -> Instance:
        a.state, a.resolved_at, a.since = "resolved", now, now
        self._resolved.append(a)
        return _copy(a)

    def _expire(self, now: float) -> None:
        cutoff = now - self.resolved_retention
        self._resolved = [a for a in self._resolved if (a.resolved_at or now) > cutoff]

    def alerts(self) -> list[Instance]:
        """Pending and firing alerts, then recently resolved ones (newest first); copies."""
        with self._lock:
            active = [_copy(a) for per in self._active.values() for a in per.values()]
            resolved = [_copy(a) for a in reversed(self._resolved)]
        order = {"firing": 0, "pending": 1}
        active.sort(key=lambda a: (order[a.state], a.rule, a.fingerprint))
        return active + resolved
