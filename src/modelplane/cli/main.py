"""Entry point: ``modelplane [--url URL] [--json] COMMAND``."""

from __future__ import annotations

from typing import Annotated

import httpx
import typer
from rich.markup import escape

from modelplane import __version__
from modelplane.cli import (
    alerts,
    auth,
    backup,
    datasets,
    deployments,
    generate,
    jobs,
    registry,
    serve,
    usage,
)
from modelplane.cli.output import err_console
from modelplane.errors import ModelplaneError

app = typer.Typer(
    help="modelplane: register, serve, train and watch models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(registry.models, name="models")
app.add_typer(registry.versions, name="versions")
app.add_typer(registry.aliases, name="aliases")
app.add_typer(deployments.deployments, name="deployments")
app.add_typer(datasets.datasets, name="datasets")
app.add_typer(serve.db, name="db")
app.command("deploy")(deployments.deploy)
app.add_typer(jobs.jobs, name="jobs")
app.command("worker")(jobs.worker)
app.command("generate")(generate.generate)
app.command("serve")(serve.serve)
app.command("gc")(serve.gc)
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)
app.command("rekey")(backup.rekey)
app.add_typer(auth.tenants, name="tenants")
app.add_typer(auth.keys, name="keys")
app.add_typer(auth.grants, name="grants")
app.command("audit")(auth.audit)
app.add_typer(alerts.alerts, name="alerts")
app.command("usage")(usage.usage)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(envvar="MODELPLANE_URL", help="Server (default http://127.0.0.1:8080)."),
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="MODELPLANE_API_KEY")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    from modelplane.client import Client

    ctx.obj = {"json": json, "client": lambda: Client(url, api_key)}


@app.command("resolve")
def resolve(ctx: typer.Context, ref: str) -> None:
    """Resolve name, name@N or name@alias to a version."""
    registry.show_version(ctx, registry.client(ctx).get_version(ref))


def main() -> None:
    try:
        app()
    except ModelplaneError as exc:
        err_console.print(f"[red]error[/red] ({exc.status}): {escape(exc.message)}")
        raise SystemExit(1) from None
    except (httpx.TransportError, OSError) as exc:  # connection refused and friends
        err_console.print(f"[red]error[/red]: cannot reach the server: {escape(str(exc))}")
        raise SystemExit(1) from None
