"""``modelplane alerts``: alerts; ``alerts rules list|show|create|delete``; export-rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from modelplane.cli.output import console, emit, err_console, parse_pairs, table
from modelplane.cli.registry import client
from modelplane.schemas.alerts import KINDS, Alert, AlertRule

alerts = typer.Typer(
    help="Alerts (pending, firing, recently resolved) and alert rules.",
    invoke_without_command=True,
)
rules = typer.Typer(help="Alert rules: from the rules file (read-only) and the API.")
alerts.add_typer(rules, name="rules")

# --above means the threshold of each kind, in that kind's unit.
ABOVE_FIELD = {
    "latency": "above_ms",
    "error_ratio": "above",
    "queue_depth": "above",
    "quota": "above_percent",
}
ABOVE_HELP = "Threshold: ms (latency), ratio (error_ratio), requests (queue_depth), % (quota)."
_STATE_STYLE = {"firing": "red", "pending": "yellow", "resolved": "green"}


def _labels(labels: dict[str, str]) -> str:
    skip = {"alertname", "severity"}
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)


def _condition(rule: AlertRule) -> str:
    c = rule.condition.model_dump(exclude={"kind"}, exclude_none=True)
    return f"{rule.condition.kind} " + " ".join(f"{k}={v}" for k, v in c.items())


def _show_alerts(items: list[Alert]) -> None:
    rows = []
    for a in items:
        style = _STATE_STYLE[a.state]
        rows.append(
            (
                f"[{style}]{a.state}[/{style}]",
                escape(a.rule),
                a.severity,
                escape(_labels(a.labels)),
                f"{a.value:.4g}",
                a.since.strftime("%Y-%m-%d %H:%M:%S"),
                escape(a.annotations.get("summary", "")),
            )
        )
    table("alerts", ["state", "rule", "severity", "labels", "value", "since", "summary"], rows)


@alerts.callback()
def list_alerts(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="Only pending, firing or resolved alerts.")
    ] = None,
) -> None:
    """Without a subcommand: the alerts now pending or firing, and recently resolved."""
    if ctx.invoked_subcommand is not None:
        return
    listed = client(ctx).alerts(state)
    if emit(ctx, listed.alerts):
        return
    if not listed.alerts:
        when = listed.evaluated_at.strftime("%H:%M:%S") if listed.evaluated_at else "not yet"
        console.print(f"no alerts (last evaluation: {when})")
        return
    _show_alerts(listed.alerts)


@rules.command("list")
def list_rules(ctx: typer.Context) -> None:
    items = client(ctx).list_alert_rules()
    if emit(ctx, items):
        return
    table(
        "alert rules",
        ["name", "source", "condition", "for", "severity", "selector"],
        [
            (
                escape(r.name),
                r.source,
                escape(_condition(r)),
                r.for_,
                r.severity,
                escape(_labels(r.selector.model_dump(exclude_none=True))),
            )
            for r in items
        ],
    )


@rules.command("show")
def show_rule(ctx: typer.Context, name: str) -> None:
    rule = client(ctx).get_alert_rule(name)
    if not emit(ctx, rule):
        console.print(yaml.safe_dump(rule.model_dump(mode="json", by_alias=True), sort_keys=False))


@rules.command("create")
def create_rule(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Rule name (CamelCase).")] = None,
    kind: Annotated[str | None, typer.Option(help=f"One of: {', '.join(KINDS)}.")] = None,
    above: Annotated[float | None, typer.Option(help=ABOVE_HELP)] = None,
    quantile: Annotated[float | None, typer.Option(help="latency: 0.99 by default.")] = None,
    window: Annotated[str | None, typer.Option(help="e.g. 5m (windowed kinds).")] = None,
    resource: Annotated[
        str | None, typer.Option(help="quota: requests_per_second or stored_bytes.")
    ] = None,
    job_kind: Annotated[str | None, typer.Option(help="job_failed: only this job kind.")] = None,
    hold: Annotated[str, typer.Option("--for", help="Hold this long before firing.")] = "0s",
    severity: Annotated[str, typer.Option(help="critical, warning or info.")] = "warning",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    deployment: Annotated[str | None, typer.Option(help="Only this deployment.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="key=value (repeatable).")] = None,
    summary: Annotated[str | None, typer.Option(help="The summary annotation.")] = None,
    annotation: Annotated[list[str] | None, typer.Option(help="key=value (repeatable).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A YAML rule (or a 'rules:' list) instead.")
    ] = None,
) -> None:
    """Create a rule from options, or every rule of a YAML file (``-f``)."""
    if file is not None:
        specs = _from_file(file)
    else:
        if name is None or kind is None:
            raise typer.BadParameter("give NAME and --kind, or --file")
        condition: dict[str, Any] = {"kind": kind}
        if above is not None:
            if kind not in ABOVE_FIELD:
                raise typer.BadParameter(f"--above does not apply to {kind!r}")
            condition[ABOVE_FIELD[kind]] = above
        extra = {"quantile": quantile, "window": window, "resource": resource, "job_kind": job_kind}
        condition |= {k: v for k, v in extra.items() if v is not None}
        notes = parse_pairs(annotation, "--annotation")
        if summary is not None:
            notes["summary"] = summary
        selector = {k: v for k, v in {"tenant": tenant, "deployment": deployment}.items() if v}
        specs = [
            {"name": name, "condition": condition, "for": hold, "severity": severity,
             "selector": selector, "labels": parse_pairs(label, "--label"), "annotations": notes}
        ]  # fmt: skip
    c = client(ctx)
    made = [c.create_alert_rule(spec) for spec in specs]
    if not emit(ctx, made):
        for r in made:
            console.print(f"created alert rule [bold]{escape(r.name)}[/bold]: {_condition(r)}")


def _from_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    if isinstance(data, dict) and "rules" in data and isinstance(data["rules"], list):
        return list(data["rules"])
    if isinstance(data, dict):
        return [data]
    raise typer.BadParameter(f"{path}: expected a rule (a mapping) or a 'rules:' list")


@rules.command("delete")
def delete_rule(ctx: typer.Context, name: str) -> None:
    client(ctx).delete_alert_rule(name)
    if not emit(ctx, {"deleted": name}):
        console.print(f"deleted alert rule [bold]{escape(name)}[/bold]")


@alerts.command("export-rules")
def export_rules(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Where to write the rules ('-': stdout).")],
) -> None:
    """Write the rules as a Prometheus alerting-rules file (passes ``promtool check rules``)."""
    text, skipped = client(ctx).export_alert_rules()
    if str(file) == "-":
        typer.echo(text, nl=False)
    else:
        file.write_text(text)
        err_console.print(f"wrote {text.count('- alert:')} rule(s) to {escape(str(file))}")
    if skipped:
        err_console.print(
            f"[yellow]left out[/yellow] (no PromQL form): {escape(', '.join(skipped))}"
        )
