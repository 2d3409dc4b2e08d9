"""``modelplane jobs …`` and ``modelplane worker``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from modelplane.cli.output import console, emit, err_console, fields, table
from modelplane.cli.registry import client
from modelplane.schemas.jobs import FINAL, Job

jobs = typer.Typer(help="Submit, watch and cancel training and batch jobs.", no_args_is_help=True)


def show(ctx: typer.Context, j: Job) -> None:
    if emit(ctx, j):
        return
    last = j.metrics[-1] if j.metrics else {}
    fields(
        f"job {j.id}",
        [
            ("kind", j.kind), ("name", j.name), ("state", j.state),
            ("progress", f"{j.progress:.0%} {j.message}"), ("attempts", j.attempts),
            ("last metrics", last), ("result", j.result), ("error", j.error),
            ("created", f"{j.created_at:%Y-%m-%d %H:%M:%S} by {j.created_by}"),
        ],
    )  # fmt: skip


@jobs.command("submit")
def jobs_submit(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(exists=True, help="A YAML or JSON job spec.")],
    wait: Annotated[bool, typer.Option(help="Show a progress bar until it ends.")] = False,
) -> None:
    """Queue the job described by SPEC (refused at once if it cannot run)."""
    try:
        body: Any = yaml.safe_load(spec.read_text())
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{spec} is not valid YAML: {exc}") from exc
    if not isinstance(body, dict):
        raise typer.BadParameter(f"{spec} must hold a mapping (kind, dataset, …)")
    c = client(ctx)
    j = c.submit_job(body)
    if wait:
        j = _watch(ctx, j.id)
    show(ctx, j)
    if j.state in ("failed", "cancelled"):
        raise typer.Exit(1)


def _watch(ctx: typer.Context, job_id: str) -> Job:
    c = client(ctx)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err_console,
    ) as bar:  # fmt: skip
        task = bar.add_task(f"job {job_id[:8]}", total=1.0, status="queued")
        while True:
            j = c.get_job(job_id)
            bar.update(task, completed=j.progress, status=f"{j.state} {j.message}")
            if j.state in FINAL:
                return j
            time.sleep(0.5)


@jobs.command("list")
def jobs_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option()] = None,
    kind: Annotated[str | None, typer.Option()] = None,
) -> None:
    items = list(client(ctx).list_jobs(state=state, kind=kind))
    if not emit(ctx, items):
        table(
            "jobs",
            ["id", "kind", "name", "state", "progress", "created"],
            [(j.id, j.kind, j.name, j.state, f"{j.progress:.0%}", f"{j.created_at:%Y-%m-%d %H:%M}")
             for j in items],
        )  # fmt: skip


@jobs.command("show")
def jobs_show(ctx: typer.Context, job_id: str) -> None:
    show(ctx, client(ctx).get_job(job_id))


@jobs.command("watch")
def jobs_watch(ctx: typer.Context, job_id: str) -> None:
    """A progress bar until the job ends."""
    show(ctx, _watch(ctx, job_id))


@jobs.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends.")
    ] = False,
) -> None:
    for line in client(ctx).job_logs(job_id, follow=follow):
        console.print(line, markup=False, highlight=False)


@jobs.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: str) -> None:
    j = client(ctx).cancel_job(job_id)
    if not emit(ctx, j):
        typer.echo(f"job {j.id}: {'cancelled' if j.state == 'cancelled' else 'cancelling'}")


def worker(
    slots: Annotated[int, typer.Option(help="Jobs to run at once.")] = 1,
) -> None:
    """Run jobs from the shared database (start as many as you like, on any machine)."""
    import logging

    from modelplane.db import make_engine, upgrade
    from modelplane.jobs.runner import Runner
    from modelplane.jobs.store import JobStore
    from modelplane.monitoring.usage_store import UsageStore
    from modelplane.settings import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    runner = Runner(JobStore(engine), settings, slots)
    runner.usage = UsageStore(engine)  # CPU and wall seconds per job, for usage and cost
    typer.echo(
        f"worker {runner.id}: {slots} slot(s) on {settings.resolved_database_url()}", err=True
    )
    try:
        runner.run()
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        engine.dispose()
