"""The rules as a Prometheus alerting-rules file, for operators who run Prometheus.

Each rule becomes one alerting rule whose ``expr`` is the PromQL form of what
``conditions.py`` evaluates in process, over the metric names of
``monitoring/metrics.py``. Quota rules compare against each tenant's quota
as it is when exporting (quotas are settings and SQL rows, not metrics): one
``or`` branch per tenant that has that quota; a quota rule no tenant has a
quota for is left out and named in ``skipped``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from modelplane.monitoring.alerts.conditions import (
    DURATION_BUCKETS,
    JOB_TRANSITIONS,
    MANAGEMENT,
    QUEUE_DEPTH,
    READY,
    REQUESTS,
    STORED_BYTES,
    Quotas,
)
from modelplane.schemas.alerts import (
    AlertRuleSpec,
    ErrorRatio,
    JobFailed,
    Latency,
    NotReady,
    QueueDepth,
    Quota,
    Selector,
)

GROUP = "modelplane"
BY = "tenant, deployment"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _matchers(sel: Selector, inference_only: bool = True, **fixed: str) -> str:
    parts = [f"protocol!={_quote(MANAGEMENT)}"] if inference_only else []
    if sel.tenant is not None:
        parts.append(f"tenant={_quote(sel.tenant)}")
    if sel.deployment is not None:
        parts.append(f"deployment={_quote(sel.deployment)}")
    parts += [
        f"{k}=~{_quote(v)}" if k == "status" else f"{k}={_quote(v)}" for k, v in fixed.items()
    ]
    return "{" + ",".join(parts) + "}"


def _number(x: float) -> str:
    return repr(float(x)) if x != int(x) else str(int(x))


def expr(rule: AlertRuleSpec, quotas: Quotas | None = None) -> str | None:
    """The PromQL of ``rule``'s condition; None when it cannot be written (see module doc)."""
    c, sel = rule.condition, rule.selector
    match c:
        case Latency():
            rate = f"rate({DURATION_BUCKETS}{_matchers(sel)}[{c.window}])"
            return (
                f"histogram_quantile({_number(c.quantile)}, sum by (le, {BY}) ({rate})) * 1000"
                f" > {_number(c.above_ms)}"
            )
        case ErrorRatio():
            errors = f"rate({REQUESTS}{_matchers(sel, status='5..')}[{c.window}])"
            total = f"rate({REQUESTS}{_matchers(sel)}[{c.window}])"
            return f"sum by ({BY}) ({errors}) / sum by ({BY}) ({total}) > {_number(c.above)}"
        case QueueDepth():
            return f"max by ({BY}) ({QUEUE_DEPTH}{_matchers(sel, False)}) > {_number(c.above)}"
        case NotReady():
            return f"max by ({BY}) ({READY}{_matchers(sel, False)}) == 0"
        case JobFailed():
            fixed = {"state": "failed"} | ({"kind": c.job_kind} if c.job_kind else {})
            grown = f"increase({JOB_TRANSITIONS}{_matchers(sel, False, **fixed)}[{c.window}])"
            return f"sum by (kind) ({grown}) > 0"
        case Quota():
            q = quotas or Quotas()
            per_second = c.resource == "requests_per_second"
            limits: Mapping[str, float] = (
                q.requests_per_second if per_second else q.max_stored_bytes
            )
            branches = []
            for tenant, limit in sorted(limits.items()):
                if limit <= 0 or (sel.tenant is not None and sel.tenant != tenant):
                    continue
                one = _matchers(Selector(tenant=tenant), False)
                used = (
                    f"sum by (tenant) (rate({REQUESTS}{one}[{c.window}]))"
                    if per_second
                    else f"max by (tenant) ({STORED_BYTES}{one})"
                )
                branches.append(f"({used} / {_number(limit)} * 100 > {_number(c.above_percent)})")
            return " or ".join(branches) or None
    raise AssertionError(f"unknown condition {c!r}")  # pragma: no cover


def export(rules: Sequence[AlertRuleSpec], quotas: Quotas | None = None) -> tuple[str, list[str]]:
    """(the rules file as YAML text, names of rules left out)."""
    out: list[dict[str, Any]] = []
    skipped: list[str] = []
    for rule in rules:
        promql = expr(rule, quotas)
        if promql is None:
            skipped.append(rule.name)
            continue
        item: dict[str, Any] = {"alert": rule.name, "expr": promql, "for": rule.for_}
        item["labels"] = {**rule.labels, "severity": rule.severity}
        if rule.annotations:
            item["annotations"] = dict(rule.annotations)
        out.append(item)
    head = "# Prometheus alerting rules exported by modelplane (modelplane alerts export-rules).\n"
    if skipped:
        head += f"# Left out (no PromQL form with today's metrics/quotas): {', '.join(skipped)}\n"
    body = yaml.safe_dump({"groups": [{"name": GROUP, "rules": out}]}, sort_keys=False, width=1000)
    return head + body, skipped
