"""``deploy/grafana/modelplane.json``: valid JSON, well-formed panels, PromQL that parses
(``promtool check rules``) and names only metrics that ``/metrics`` really exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import LiveServer
from tests.monitoring.conftest import oip

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "modelplane.json"
# Grafana's own variables, replaced by what they stand for so that promtool can parse.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$tenant": ".*",
                "$deployment": ".*", "$job": ".*"}  # fmt: skip
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exprs(doc: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return found


def exposed(text: str) -> set[str]:
    """Every series name the exposition declares, with or without samples yet."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + s for s in SUFFIXES.get(kind, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {n for n in IDENT.findall(without_strings) if n.startswith(("modelplane_", "process_"))}


def test_the_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 30
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in doc["panels"] if p["type"] != "row"]
    assert len(graphs) >= 10
    for p in graphs:
        assert p["title"] and p["targets"] and all(t["expr"].strip() for t in p["targets"])
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys()
    titles = " ".join(p["title"] for p in graphs).lower()
    for topic in ("latency", "requests", "error", "queue", "batch", "tenant"):
        assert topic in titles, topic


def test_every_expression_parses_and_names_real_metrics(served: LiveServer, tmp_path: Path) -> None:
    with httpx.Client(timeout=30) as c:
        assert oip(c, served.url) == 200
        names = exposed(c.get(f"{served.url}/metrics").text)
    doc = json.loads(DASHBOARD.read_text())
    queries = exprs(doc)
    unknown = {n for e in queries for n in metric_names(e)} - names
    assert not unknown, f"the dashboard uses metrics /metrics does not have: {sorted(unknown)}"
    assert any("histogram_quantile(0.99" in e for e in queries)

    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool is not installed (Debian package 'prometheus')")
    rules = []
    for i, e in enumerate(q for q in queries if not q.startswith("label_values(")):
        for var, value in GRAFANA_VARS.items():
            e = e.replace(var, value)
        assert "$" not in e, e
        rules.append({"record": f"dashboard:panel_{i}", "expr": e})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
