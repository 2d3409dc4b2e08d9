"""The rules as a Prometheus alerting-rules file: ``promtool check rules`` accepts it, and
``promtool test rules`` shows the PromQL fires where the in-process evaluator does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.monitoring.alerts.conditions import Quotas
from modelplane.monitoring.alerts.promql import export
from modelplane.schemas.alerts import AlertRuleSpec

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool not installed (apt-get install prometheus)"
)

RULES: list[dict[str, Any]] = [
    {
        "name": "SlowModel",
        "condition": {"kind": "latency", "above_ms": 250, "window": "5m"},
        "for": "2m",
        "severity": "critical",
        "selector": {"deployment": "double"},
        "labels": {"team": "ml"},
        "annotations": {"summary": "p99 of {{ $labels.deployment }} is {{ $value }} ms"},
    },
    {"name": "Errors", "condition": {"kind": "error_ratio", "above": 0.05}, "for": "1m"},
    {
        "name": "QueueFull",
        "condition": {"kind": "queue_depth", "above": 10},
        "selector": {"tenant": "acme"},
    },
    {"name": "NotReady", "condition": {"kind": "deployment_not_ready"}, "for": "5m"},
    {"name": "TrainFailed", "condition": {"kind": "job_failed", "job_kind": "train"}},
    {
        "name": "NearRate",
        "condition": {"kind": "quota", "resource": "requests_per_second", "above_percent": 80},
    },
    {
        "name": "NearStorage",
        "condition": {"kind": "quota", "resource": "stored_bytes", "above_percent": 90},
    },
]


QUOTAS = Quotas(requests_per_second={"acme": 10.0}, max_stored_bytes={"acme": 10**9})


def specs() -> list[AlertRuleSpec]:
    return [AlertRuleSpec.model_validate(r) for r in RULES]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_export_shape() -> None:
    quotas = Quotas({"acme": 10.0, "beta": 0.0, "gamma": 2.5}, {"acme": 0, "beta": 10**9})
    text, skipped = export(specs(), quotas)
    doc = yaml.safe_load(text)
    [group] = doc["groups"]
    by_name = {r["alert"]: r for r in group["rules"]}
    assert skipped == []
    assert by_name["NearStorage"]["expr"] == (
        '(max by (tenant) (modelplane_tenant_stored_bytes{tenant="beta"}) / 1000000000 * 100 > 90)'
    )
    slow = by_name["SlowModel"]
    assert slow["for"] == "2m" and slow["labels"] == {"team": "ml", "severity": "critical"}
    assert slow["annotations"]["summary"] == RULES[0]["annotations"]["summary"]
    assert 'deployment="double"' in slow["expr"] and "histogram_quantile(0.99," in slow["expr"]
    # One branch per tenant that has a rate quota, with that quota in it.
    near = by_name["NearRate"]["expr"]
    assert 'tenant="acme"' in near and "/ 10 *" in near and 'tenant="gamma"' in near
    assert "beta" not in near
    text, skipped = export(specs(), Quotas())
    assert skipped == ["NearRate", "NearStorage"] and "NearRate" in text.splitlines()[1]


@needs_promtool
def test_promtool_check_rules(tmp_path: Path) -> None:
    text, _ = export(specs(), QUOTAS)
    path = tmp_path / "modelplane.rules.yml"
    path.write_text(text)
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


@needs_promtool
def test_promtool_unit_test_fires_like_the_evaluator(tmp_path: Path) -> None:
    """Series Prometheus would scrape from us; the exported rules fire on the same cases."""
    text, _ = export(specs(), QUOTAS)
    (tmp_path / "rules.yml").write_text(text)
    req = (
        "modelplane_requests_total{{protocol='oip',tenant='acme',deployment='double',"
        "version='1',status='{}'}}"
    )
    bucket = (
        "modelplane_request_duration_seconds_bucket{{protocol='oip',tenant='acme',"
        "deployment='double',version='1',status='200',le='{}'}}"
    )
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 600 requests a minute (10/s, the whole quota), 10% of them 503.
                    {"series": req.format("200"), "values": "0+540x20"},
                    {"series": req.format("503"), "values": "0+60x20"},
                    # Latency: every request between 0.25 s and 0.5 s.
                    {"series": bucket.format("0.25"), "values": "0+0x20"},
                    {"series": bucket.format("0.5"), "values": "0+540x20"},
                    {"series": bucket.format("+Inf"), "values": "0+540x20"},
                    # 950 MB of a 1 GB quota: above 90 %.
                    {
                        "series": "modelplane_tenant_stored_bytes{tenant='acme'}",
                        "values": "95e7x20",
                    },
                    {
                        "series": "modelplane_queue_depth{tenant='acme',deployment='double'}",
                        "values": "0 0 20x18",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "Errors",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "tenant": "acme",
                                    "deployment": "double",
                                }
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "SlowModel",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "team": "ml",
                                    "tenant": "acme",
                                    "deployment": "double",
                                },
                                "exp_annotations": {"summary": "p99 of double is 497.5 ms"},
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "QueueFull",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "tenant": "acme",
                                    "deployment": "double",
                                }
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "NearRate",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "tenant": "acme"}}],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "NearStorage",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "tenant": "acme"}}],
                    },
                    {"eval_time": "10m", "alertname": "NotReady", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(tests))
    done = promtool("test", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
