"""Alert maths and states without a server: windows, quantiles, the state machine (fake clock),
rule validation, the rules file, notifier retries against a real local receiver."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from modelplane.errors import InvalidInput
from modelplane.monitoring.alerts.conditions import Quotas, evaluate
from modelplane.monitoring.alerts.evaluator import Evaluator
from modelplane.monitoring.alerts.notify import WebhookNotifier, message
from modelplane.monitoring.alerts.rules import load_file, parse_rules
from modelplane.monitoring.alerts.state import Tracker
from modelplane.monitoring.alerts.window import History, histogram_quantile
from modelplane.monitoring.alerts.wiring import sampler
from modelplane.monitoring.metrics import LATENCY_BUCKETS, Metrics
from modelplane.schemas.alerts import AlertRuleSpec, duration_seconds
from tests.monitoring.receiver import receiver


def rule(**kw: Any) -> AlertRuleSpec:
    base: dict[str, Any] = {"name": "R", "condition": {"kind": "queue_depth", "above": 5}}
    return AlertRuleSpec.model_validate(base | kw)


class FakeBook:
    def __init__(self, *rules: AlertRuleSpec) -> None:
        self.rules = list(rules)

    def all(self) -> list[AlertRuleSpec]:
        return self.rules


class Recorder:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def notify(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)

    async def close(self) -> None:
        return None


def evaluator(metrics: Metrics, *rules: AlertRuleSpec, **kw: Any) -> tuple[Evaluator, Recorder]:
    rec = Recorder()
    ev = Evaluator(FakeBook(*rules), sampler(metrics), [rec], clock=lambda: 0.0, **kw)  # type: ignore[arg-type]
    return ev, rec


def step(ev: Evaluator, now: float) -> None:
    ev.dispatch(ev.evaluate(now))


# -- durations and validation ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m5", "5x", "1m1h", "-5m", "5 m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        duration_seconds(text)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"name": "9Bad"}, "invalid rule name"),
        ({"name": "a-b"}, "invalid rule name"),
        ({"condition": {"kind": "latency", "above_ms": 10, "quantile": 1.5}}, "quantile"),
        ({"condition": {"kind": "latency"}}, "above_ms"),
        ({"condition": {"kind": "latency", "above_ms": 10, "window": "0s"}}, "between 1s and 7d"),
        ({"condition": {"kind": "error_ratio", "above": 2}}, "above"),
        ({"condition": {"kind": "nope"}}, "kind"),
        ({"condition": {"kind": "queue_depth", "above": 1, "extra": 1}}, "extra"),
        ({"for": "soon"}, "duration"),
        ({"severity": "page"}, "severity"),
        ({"labels": {"alertname": "x"}}, "set by the rule"),
        ({"labels": {"bad-name": "x"}}, "invalid label name"),
        ({"annotations": {"summary": "{{ .Foo }}"}}, "templates"),
        ({"selector": {"tenant": "Not A Tenant"}}, "invalid tenant"),
        ({"condition": {"kind": "job_failed"}, "selector": {"tenant": "a"}}, "job_failed"),
        (
            {
                "condition": {"kind": "quota", "resource": "stored_bytes", "above_percent": 80},
                "selector": {"deployment": "d"},
            },
            "per tenant",
        ),
    ],
)
def test_rule_validation(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        rule(**spec)


def test_rule_round_trips_with_for_alias() -> None:
    r = rule(**{"for": "2m", "labels": {"team": "ml"}})
    dumped = r.model_dump(mode="json", by_alias=True)
    assert dumped["for"] == "2m" and "for_" not in dumped
    assert AlertRuleSpec.model_validate(dumped) == r and r.for_seconds == 120


def test_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: SlowDouble\n"
        "    condition: {kind: latency, above_ms: 250, window: 5m}\n"
        "    for: 1m\n"
        "    selector: {deployment: double}\n"
    )
    [r] = load_file(path)
    assert (r.name, r.condition.kind, r.for_seconds, r.selector.deployment) == (
        "SlowDouble",
        "latency",
        60,
        "double",
    )
    path.write_text("rules:\n  - name: A\n    condition: {kind: latency}\n")
    with pytest.raises(InvalidInput, match=r"rule A: condition.latency.above_ms"):
        load_file(path)
    path.write_text("rules: [\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_file(path)
    with pytest.raises(InvalidInput, match="appears twice"):
        one = {"name": "A", "condition": {"kind": "deployment_not_ready"}}
        parse_rules({"rules": [one, one]}, "f")
    with pytest.raises(InvalidInput, match="unknown top-level"):
        parse_rules({"rule": []}, "f")
    with pytest.raises(InvalidInput, match="No such file"):
        load_file(tmp_path / "missing.yaml")


# -- window maths ---------------------------------------------------------------------
def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 100 observations: 50 in (0, 0.1], 40 in (0.1, 0.5], 10 in (0.5, 1].
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * 20 / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)
    # Ranks in the +Inf bucket answer the highest finite bound.
    assert histogram_quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == 0.1
    assert math.isnan(histogram_quantile(0.99, {0.1: 0.0, math.inf: 0.0}))


def test_latency_window_uses_deltas() -> None:
    """Old slow requests leave the window: only observations within it count."""
    metrics = Metrics(process=False)
    r = rule(condition={"kind": "latency", "above_ms": 100, "window": "10s"})
    h = History(0.0)
    sample = sampler(metrics)
    for _ in range(20):
        metrics.observe_request("oip", "default", "d", "1", 200, 2.0)  # 2 s each
    h.add(1.0, sample(), 100)
    [(labels, ms)] = evaluate(r, h, Quotas()).items()
    assert dict(labels) == {"tenant": "default", "deployment": "d"} and 1000 < ms <= 2500
    for _ in range(50):
        metrics.observe_request("oip", "default", "d", "1", 200, 0.002)
    h.add(20.0, sample(), 100)  # the slow ones are > 10 s old now
    assert evaluate(r, h, Quotas()) == {}
    # Management calls are not model latency.
    metrics.observe_request("management", "default", "", "", 200, 5.0)
    h.add(21.0, sample(), 100)
    assert evaluate(r, h, Quotas()) == {}


def test_error_ratio_and_selectors() -> None:
    metrics = Metrics(process=False)
    sample = sampler(metrics)
    for status, n in ((200, 6), (503, 3), (500, 1), (404, 10)):
        for _ in range(n):
            metrics.observe_request("oip", "acme", "a", "1", status, 0.01)
    metrics.observe_request("oip", "acme", "b", "1", 200, 0.01)
    h = History(0.0)
    h.add(5.0, sample(), 100)
    r = rule(condition={"kind": "error_ratio", "above": 0.1, "window": "1m"})
    got = {dict(k)["deployment"]: v for k, v in evaluate(r, h, Quotas()).items()}
    assert got == {"a": pytest.approx(4 / 20)}
    only_b = rule(condition={"kind": "error_ratio", "above": 0.1}, selector={"deployment": "b"})
    assert evaluate(only_b, h, Quotas()) == {}


def test_quota_rate_and_storage() -> None:
    metrics = Metrics(process=False)
    for _ in range(90):
        metrics.observe_request("oip", "acme", "a", "1", 200, 0.01)
    h = History(0.0)
    h.add(10.0, sampler(metrics)(), 100)  # 9 requests/s
    rps = rule(condition={"kind": "quota", "resource": "requests_per_second", "above_percent": 80})
    quotas = Quotas(requests_per_second={"acme": 10.0})
    [(labels, pct)] = evaluate(rps, h, quotas).items()
    assert dict(labels) == {"tenant": "acme"} and pct == pytest.approx(90)
    assert evaluate(rps, h, Quotas(requests_per_second={"acme": 100.0})) == {}
    assert evaluate(rps, h, Quotas()) == {}  # no quota: never near it
    stored = rule(condition={"kind": "quota", "resource": "stored_bytes", "above_percent": 50})
    for tenant, size in (("acme", 600), ("beta", 10), ("gamma", 900)):
        metrics.tenant_stored_bytes.labels(tenant).set(size)
    h.add(11.0, sampler(metrics)(), 100)
    q = Quotas(max_stored_bytes={"acme": 1000, "beta": 1000, "gamma": 0})
    assert {dict(k)["tenant"]: v for k, v in evaluate(stored, h, q).items()} == {"acme": 60.0}


def test_history_stays_bounded() -> None:
    h = History(0.0, max_samples=10)
    for t in range(1, 1000):
        h.add(float(t), {}, keep_seconds=100.0)
    assert len(h) <= 10
    assert h.base(100.0)[0] <= 999 - 100 + 10  # still reaches about a window back


# -- the state machine (fake clock) ---------------------------------------------------
def test_pending_firing_resolved_with_for() -> None:
    metrics = Metrics(process=False)
    depth = metrics.deployment("default", "d").queue_depth
    ev, rec = evaluator(metrics, rule(**{"for": "30s"}), interval=10)
    step(ev, 0)
    assert ev.alerts().alerts == [] and rec.bodies == []
    depth.set(9)
    step(ev, 10)
    [a] = ev.alerts().alerts
    assert (a.state, a.value, a.labels["deployment"]) == ("pending", 9, "d")
    step(ev, 30)
    assert ev.alerts().alerts[0].state == "pending" and rec.bodies == []
    step(ev, 40)  # held for 30 s
    assert ev.alerts().alerts[0].state == "firing"
    step(ev, 50)
    step(ev, 60)  # still firing: no second notification
    assert [b["status"] for b in rec.bodies] == ["firing"]
    depth.set(0)
    step(ev, 70)
    [a] = ev.alerts().alerts
    assert a.state == "resolved" and a.resolved_at is not None
    step(ev, 80)
    assert [b["status"] for b in rec.bodies] == ["firing", "resolved"]


def test_pending_that_clears_never_notifies() -> None:
    metrics = Metrics(process=False)
    depth = metrics.deployment("default", "d").queue_depth
    ev, rec = evaluator(metrics, rule(**{"for": "1m"}))
    depth.set(9)
    step(ev, 0)
    depth.set(1)
    step(ev, 30)
    assert ev.alerts().alerts == [] and rec.bodies == []


def test_resolved_then_again_is_a_new_alert_and_retention() -> None:
    r = rule()
    t = Tracker(resolved_retention=100)
    series = (("deployment", "d"), ("tenant", "default"))
    assert [n.status for n in t.update(r, {series: 9}, 0)] == ["firing"]  # for: 0s
    assert [n.status for n in t.update(r, {}, 10)] == ["resolved"]
    assert [n.status for n in t.update(r, {series: 9}, 20)] == ["firing"]
    assert [a.state for a in t.alerts()] == ["firing", "resolved"]
    t.update(r, {series: 9}, 200)
    assert [a.state for a in t.alerts()] == ["firing"]  # the old resolved one expired
    assert [n.status for n in t.forget(set(), 210)] == ["resolved"]  # rule deleted


def test_message_is_alertmanager_webhook_format() -> None:
    metrics = Metrics(process=False)
    metrics.deployment("acme", "d").queue_depth.set(9)
    metrics.deployment("acme", "e").queue_depth.set(7)
    summary = "{{ $labels.deployment }}: {{ $value }}"
    r = rule(labels={"team": "ml"}, annotations={"summary": summary})
    ev, rec = evaluator(metrics, r)
    step(ev, 1000)
    [body] = rec.bodies
    assert body["version"] == "4" and body["status"] == "firing"
    assert body["groupKey"] == '{}:{alertname="R"}' and body["groupLabels"] == {"alertname": "R"}
    assert body["commonLabels"] == {
        "alertname": "R",
        "severity": "warning",
        "team": "ml",
        "tenant": "acme",
    }
    assert sorted(a["annotations"]["summary"] for a in body["alerts"]) == ["d: 9", "e: 7"]
    for a in body["alerts"]:
        assert a["status"] == "firing" and a["endsAt"] == "0001-01-01T00:00:00Z"
        assert a["startsAt"] == "1970-01-01T00:16:40Z" and len(a["fingerprint"]) == 16
        assert a["generatorURL"].endswith("/api/v1/alerts/rules/R")
    assert set(body) >= {"receiver", "externalURL", "commonAnnotations", "truncatedAlerts"}
    resolved = message("resolved", "R", [], "http://x")
    assert resolved["status"] == "resolved" and resolved["commonLabels"] == {}


# -- the webhook notifier against a real receiver --------------------------------------
def test_webhook_retries_with_backoff_until_accepted() -> None:
    body = {"status": "firing", "alerts": [{"labels": {"alertname": "R"}}]}

    async def run(url: str) -> WebhookNotifier:
        n = WebhookNotifier([url], attempts=4, backoff=0.05)
        n.start()
        n.notify(body)
        await n.close(grace=30)
        return n

    with receiver([500, 503]) as r:
        n = asyncio.run(run(r.url))
        assert r.bodies == [body, body, body] and r.accepted == [body]
        assert (n.delivered, n.failed) == (1, 0)
    with receiver([500] * 10) as r:  # bounded: gives up after `attempts`
        n = asyncio.run(run(r.url))
        assert len(r.bodies) == 4 and r.accepted == [] and (n.delivered, n.failed) == (0, 1)
    with receiver([400]) as r:  # a refusal is not retried
        n = asyncio.run(run(r.url))
        assert len(r.bodies) == 1 and n.failed == 1


def test_webhook_notify_does_not_block_on_a_dead_receiver() -> None:
    """``notify`` only enqueues: with nothing listening, it returns at once; close gives up."""

    async def run() -> WebhookNotifier:
        n = WebhookNotifier(["http://127.0.0.1:9/hook"], attempts=3, backoff=10)
        n.start()
        n.notify({"status": "firing"})
        assert n.delivered == 0
        await n.close(grace=0.2)
        return n

    n = asyncio.run(run())
    assert n.delivered == 0


def test_job_failed_counts_failures_in_the_window() -> None:
    metrics = Metrics(process=False)
    r = rule(condition={"kind": "job_failed", "job_kind": "train", "window": "1m"})
    ev, rec = evaluator(metrics, r)
    metrics.job_transitions.labels("train", "running").inc()
    metrics.job_transitions.labels("batch_predict", "failed").inc()  # another kind
    step(ev, 10)
    assert rec.bodies == []
    metrics.job_transitions.labels("train", "failed").inc()
    step(ev, 20)
    [body] = rec.bodies
    assert body["status"] == "firing" and body["alerts"][0]["labels"]["kind"] == "train"
    step(ev, 70)  # the failure is still inside the minute
    step(ev, 90)  # now it is not
    assert [b["status"] for b in rec.bodies] == ["firing", "resolved"]


def test_snapshots_keep_only_the_labels_rules_read() -> None:
    """Versions, statuses and protocols are summed away before a snapshot is kept."""
    metrics = Metrics(process=False)
    for version in ("1", "2", "3"):
        for status in (200, 404, 500, 503):
            for protocol in ("oip", "tfserving"):
                metrics.observe_request(protocol, "acme", "d", version, status, 0.01)
    metrics.observe_request("management", "acme", "", "", 200, 0.01)
    snap = sampler(metrics)()
    requests = {tuple(v for _, v in k): n for k, n in snap["modelplane_requests_total"].items()}
    assert requests == {
        ("d", "inference", "other", "acme"): 12,
        ("d", "inference", "5xx", "acme"): 12,
        ("", "management", "other", "acme"): 1,
    }
    buckets = snap["modelplane_request_duration_seconds_bucket"]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1  # one deployment, model traffic only
    assert max(buckets.values()) == 24
    again = sampler(metrics)()
    assert again == snap
