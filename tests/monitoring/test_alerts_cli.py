"""``modelplane alerts``, ``alerts rules list|show|create|delete`` and ``alerts export-rules``
against a live server; the exported file passes ``promtool check rules``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.client import Client
from modelplane.errors import Conflict, InvalidInput
from tests.conftest import LiveServer
from tests.monitoring.test_alerts_export import PROMTOOL, needs_promtool

runner = CliRunner()


def cli(server: LiveServer, *args: str) -> str:
    result = runner.invoke(app, list(args), env={"MODELPLANE_URL": server.url})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout


def cli_json(server: LiveServer, *args: str) -> Any:
    return json.loads(cli(server, "--json", *args))


@needs_promtool
def test_rules_from_the_cli_and_export(server: LiveServer, tmp_path: Path) -> None:
    made = cli_json(
        server, "alerts", "rules", "create", "SlowDouble", "--kind", "latency", "--above", "250",
        "--window", "5m", "--for", "2m", "--deployment", "double", "--label", "team=ml",
        "--summary", "p99 of {{ $labels.deployment }} is {{ $value }} ms",
    )  # fmt: skip
    assert made[0]["condition"] == {"kind": "latency", "above_ms": 250, "window": "5m",
                                    "quantile": 0.99}  # fmt: skip
    assert made[0]["for"] == "2m" and made[0]["labels"] == {"team": "ml"}
    rules_file = tmp_path / "more.yaml"
    rules_file.write_text(
        "rules:\n"
        "  - {name: QueueFull, condition: {kind: queue_depth, above: 10}, severity: critical}\n"
        "  - {name: TrainFailed, condition: {kind: job_failed, job_kind: train}}\n"
    )
    assert "created alert rule" in cli(server, "alerts", "rules", "create", "-f", str(rules_file))
    listed = cli_json(server, "alerts", "rules", "list")
    assert [r["name"] for r in listed] == ["QueueFull", "SlowDouble", "TrainFailed"]
    table = cli(server, "alerts", "rules", "list")
    assert "SlowDouble" in table and "latency" in table
    assert "above_ms: 250" in cli(server, "alerts", "rules", "show", "SlowDouble")
    assert "no alerts" in cli(server, "alerts")
    assert cli_json(server, "alerts", "--state", "firing") == []

    out = tmp_path / "modelplane.rules.yml"
    cli(server, "alerts", "export-rules", str(out))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "SUCCESS: 3 rules found" in done.stdout, done.stdout

    cli(server, "alerts", "rules", "delete", "QueueFull")
    assert [r["name"] for r in cli_json(server, "alerts", "rules", "list")] == [
        "SlowDouble", "TrainFailed",
    ]  # fmt: skip


def test_cli_errors(server: LiveServer) -> None:
    env = {"MODELPLANE_URL": server.url}
    bad = runner.invoke(app, ["alerts", "rules", "create", "X", "--kind", "latency"], env=env)
    assert isinstance(bad.exception, InvalidInput) and "above_ms" in bad.exception.message
    wrong = runner.invoke(
        app, ["alerts", "rules", "create", "X", "--kind", "deployment_not_ready", "--above", "1"],
        env=env,
    )  # fmt: skip
    assert wrong.exit_code != 0 and "does not apply" in wrong.output
    with Client(server.url) as c:
        c.create_alert_rule({"name": "X", "condition": {"kind": "deployment_not_ready"}})
        with pytest.raises(Conflict):
            c.create_alert_rule({"name": "X", "condition": {"kind": "deployment_not_ready"}})
        replaced = c.replace_alert_rule(
            "X", {"name": "X", "condition": {"kind": "queue_depth", "above": 3}}
        )
        assert replaced.condition.kind == "queue_depth" and c.get_alert_rule("X") == replaced
        text, skipped = c.export_alert_rules()
        assert "alert: X" in text and skipped == []
        assert c.alerts().alerts == []
        c.delete_alert_rule("X")
        assert c.list_alert_rules() == []
