"""``modelplane usage``: metered requests, compute, bytes, jobs, storage and cost."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from modelplane.cli.output import console, emit, table
from modelplane.cli.registry import client
from modelplane.schemas.usage import GROUPS

COLUMNS = (
    ("requests", "requests"), ("items", "items"), ("compute_seconds", "compute s"),
    ("bytes_in", "bytes in"), ("bytes_out", "bytes out"), ("prompt_tokens", "prompt tok"),
    ("completion_tokens", "completion tok"), ("job_cpu_seconds", "job cpu s"),
    ("stored_gb_months", "GB-months"), ("cost", "cost"),
)  # fmt: skip


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def usage(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="One tenant (admins; default: all).")] = None,
    start: Annotated[
        datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First UTC day.")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last UTC day.")
    ] = None,
    group_by: Annotated[
        str, typer.Option("--group-by", help="Comma-separated: tenant, deployment, day.")
    ] = "tenant",
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """Usage and cost per tenant, deployment and/or day (default: the last 30 days)."""
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise typer.BadParameter(f"--group-by {bad[0]!r}: choose from {', '.join(GROUPS)}")
    c = client(ctx)
    first, last = (d.date() if d else None for d in (start, end))
    if csv:
        typer.echo(c.usage_csv(tenant, first, last, groups), nl=False)
        return
    report = c.usage(tenant, first, last, groups)
    if emit(ctx, report):
        return
    # Columns that are zero on every line (no LLM tokens, no jobs, …) are left out.
    shown = [
        (f, title) for f, title in COLUMNS
        if f in ("requests", "cost") or any(getattr(line, f) for line in report.rows)
    ]  # fmt: skip
    rows = [
        [
            *(str(getattr(line, g) or "-") for g in groups),  # "-": jobs and storage
            *(_number(getattr(line, f)) for f, _ in shown),
        ]
        for line in report.rows
    ]
    table(
        f"usage {report.start} to {report.end}",
        [*groups, *(title for _, title in shown)],
        rows,
    )
    console.print(f"total cost: {report.total_cost:.6g}")
