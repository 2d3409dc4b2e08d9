"""What each rule's condition means over the sampled metrics: the series where it holds.

Each function returns ``{labels: value}`` for the series that match the rule's
condition right now (the alert's labels start from those). ``promql.py`` writes
the same conditions as PromQL; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modelplane.monitoring.alerts.window import (
    History,
    Labels,
    Series,
    Snapshot,
    group,
    quantiles,
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
    duration_seconds,
)

REQUESTS = "modelplane_requests_total"
DURATION_BUCKETS = "modelplane_request_duration_seconds_bucket"
QUEUE_DEPTH = "modelplane_queue_depth"
READY = "modelplane_deployment_ready"
JOB_TRANSITIONS = "modelplane_job_transitions_total"
STORED_BYTES = "modelplane_tenant_stored_bytes"
SAMPLED = frozenset({REQUESTS, DURATION_BUCKETS, QUEUE_DEPTH, READY, JOB_TRANSITIONS, STORED_BYTES})
MANAGEMENT = "management"  # management API calls are not model traffic
INFERENCE, ERRORS, OTHER = "inference", "5xx", "other"  # label values after ``compact``
BY_DEPLOYMENT = ("tenant", "deployment")
BY_TENANT = ("tenant",)


@dataclass
class Quotas:
    """Per tenant: its request-rate and storage quotas (0 or missing: none)."""

    requests_per_second: Mapping[str, float] = field(default_factory=dict)
    max_stored_bytes: Mapping[str, int] = field(default_factory=dict)


def selects(selector: Selector, inference_only: bool = True) -> Callable[[Mapping[str, str]], bool]:
    def match(labels: Mapping[str, str]) -> bool:
        if inference_only and labels.get("protocol") == MANAGEMENT:
            return False
        if selector.tenant is not None and labels.get("tenant") != selector.tenant:
            return False
        return selector.deployment is None or labels.get("deployment") == selector.deployment

    return match


def _above(series: Series, threshold: float) -> Series:
    return {k: v for k, v in series.items() if v > threshold}


def latency(c: Latency, sel: Selector, h: History) -> Series:
    buckets, _ = h.increase(DURATION_BUCKETS, duration_seconds(c.window), selects(sel))
    ms = {k: v * 1000 for k, v in quantiles(c.quantile, buckets, BY_DEPLOYMENT).items()}
    return _above(ms, c.above_ms)


def _is_5xx(labels: Mapping[str, str]) -> bool:
    status = labels.get("status", "")
    return status == ERRORS or (len(status) == 3 and status.startswith("5"))  # =~"5.."


def compact(snap: Snapshot) -> Snapshot:
    """Drop the labels no condition reads, summing what they split, before a snapshot is kept.

    Requests keep tenant, deployment, whether they are management calls and whether they
    failed (5xx); latency buckets keep tenant, deployment and ``le`` of model traffic only.
    Versions, statuses and protocols multiply series; the history holds many snapshots.
    """
    out = dict(snap)
    requests: Series = {}
    for labels, value in snap.get(REQUESTS, {}).items():
        d = dict(labels)
        key: Labels = (
            ("deployment", d.get("deployment", "")),
            ("protocol", MANAGEMENT if d.get("protocol") == MANAGEMENT else INFERENCE),
            ("status", ERRORS if _is_5xx(d) else OTHER),
            ("tenant", d.get("tenant", "")),
        )
        requests[key] = requests.get(key, 0.0) + value
    buckets: Series = {}
    for labels, value in snap.get(DURATION_BUCKETS, {}).items():
        d = dict(labels)
        if d.get("protocol") == MANAGEMENT:
            continue
        key = (("deployment", d.get("deployment", "")), ("le", d.get("le", "+Inf")),
               ("tenant", d.get("tenant", "")))  # fmt: skip
        buckets[key] = buckets.get(key, 0.0) + value
    out[REQUESTS], out[DURATION_BUCKETS] = requests, buckets
    return out


def error_ratio(c: ErrorRatio, sel: Selector, h: History) -> Series:
    grown, _ = h.increase(REQUESTS, duration_seconds(c.window), selects(sel))
    total = group(grown, BY_DEPLOYMENT)
    errors = group({k: v for k, v in grown.items() if _is_5xx(dict(k))}, BY_DEPLOYMENT)
    ratios = {k: errors.get(k, 0.0) / n for k, n in total.items() if n > 0}
    return _above(ratios, c.above)


def queue_depth(c: QueueDepth, sel: Selector, h: History) -> Series:
    match = selects(sel)
    now = {k: v for k, v in h.current(QUEUE_DEPTH).items() if match(dict(k))}
    return _above(group(now, BY_DEPLOYMENT, "max"), c.above)


def not_ready(_: NotReady, sel: Selector, h: History) -> Series:
    match = selects(sel)
    now = {k: v for k, v in h.current(READY).items() if match(dict(k))}
    return {k: v for k, v in group(now, BY_DEPLOYMENT, "max").items() if v == 0}


def job_failed(c: JobFailed, _sel: Selector, h: History) -> Series:
    def match(labels: Mapping[str, str]) -> bool:
        wanted = c.job_kind is None or labels.get("kind") == c.job_kind
        return wanted and labels.get("state") == "failed"

    grown, _ = h.increase(JOB_TRANSITIONS, duration_seconds(c.window), match)
    return _above(group(grown, ("kind",)), 0)


def quota(c: Quota, sel: Selector, h: History, q: Quotas) -> Series:
    used: Series = {}
    if c.resource == "requests_per_second":
        grown, seconds = h.increase(
            REQUESTS, duration_seconds(c.window), selects(sel, inference_only=False)
        )
        for key, n in group(grown, BY_TENANT).items():
            limit = q.requests_per_second.get(key[0][1], 0.0)
            if limit > 0 and seconds > 0:
                used[key] = 100 * n / seconds / limit
    else:
        stored = {k: v for k, v in h.current(STORED_BYTES).items() if selects(sel, False)(dict(k))}
        for key, size in group(stored, BY_TENANT, "max").items():
            limit = q.max_stored_bytes.get(key[0][1], 0)
            if limit > 0:
                used[key] = 100 * size / limit
    return _above(used, c.above_percent)


def evaluate(rule: AlertRuleSpec, h: History, q: Quotas) -> dict[Labels, float]:
    """The series where ``rule``'s condition holds now, with their values."""
    c, sel = rule.condition, rule.selector
    match c:
        case Latency():
            return latency(c, sel, h)
        case ErrorRatio():
            return error_ratio(c, sel, h)
        case QueueDepth():
            return queue_depth(c, sel, h)
        case NotReady():
            return not_ready(c, sel, h)
        case JobFailed():
            return job_failed(c, sel, h)
        case Quota():
            return quota(c, sel, h, q)
    raise AssertionError(f"unknown condition {c!r}")  # pragma: no cover


def longest_window(rules: list[AlertRuleSpec]) -> float:
    """How far back the history must reach for these rules."""
    return max(
        (duration_seconds(w) for r in rules if (w := getattr(r.condition, "window", None))),
        default=60.0,
    )
