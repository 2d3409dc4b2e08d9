"""``modelplane models|versions|aliases …``: the registry over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from modelplane.cli.output import emit, fields, parse_pairs, table, transfer
from modelplane.client import Client
from modelplane.schemas.registry import Version

models = typer.Typer(help="Register, list, update and delete models.", no_args_is_help=True)
versions = typer.Typer(help="Upload, inspect, download and tag versions.", no_args_is_help=True)
aliases = typer.Typer(
    help="Point aliases at versions, with history and rollback.", no_args_is_help=True
)

Tags = Annotated[list[str] | None, typer.Option("--tag", help="key=value (repeatable)")]


def client(ctx: typer.Context) -> Client:
    c: Client = ctx.obj["client"]()
    return c


def show_version(ctx: typer.Context, v: Version) -> None:
    if emit(ctx, v):
        return
    sig = "; ".join(
        f"{'in' if kind == 'inputs' else 'out'} {t.name}: {t.dtype}{t.shape}"
        for kind in ("inputs", "outputs")
        for t in getattr(v.signature, kind)
    )
    fields(
        f"{v.model}@{v.version}",
        [
            ("format", v.format),
            ("aliases", ", ".join(v.aliases)),
            ("sha256", v.artifact.sha256),
            ("size", v.artifact.size),
            ("packaging", v.artifact.packaging),
            ("signature", sig),
            ("params", v.params),
            ("metrics", v.metrics),
            ("tags", v.tags),
            ("parents", ", ".join(v.parents)),
            ("source", v.source),
            ("description", v.description),
            ("created", f"{v.created_at:%Y-%m-%d %H:%M:%S} by {v.created_by}"),
        ],
    )


# -- models --------------------------------------------------------------------
@models.command("create")
def models_create(
    ctx: typer.Context,
    name: str,
    description: Annotated[str, typer.Option()] = "",
    task: Annotated[str, typer.Option()] = "",
    tag: Tags = None,
) -> None:
    """Register a new model name."""
    m = client(ctx).create_model(name, description, task, parse_pairs(tag, "--tag"))
    if not emit(ctx, m):
        typer.echo(f"created model {m.name}")


@models.command("list")
def models_list(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Option(help="Name prefix.")] = "",
    tag: Annotated[str | None, typer.Option(help="key or key=value")] = None,
    task: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List models (all pages)."""
    items = list(client(ctx).list_models(prefix=prefix, tag=tag, task=task))
    if not emit(ctx, items):
        table(
            "models",
            ["name", "latest", "task", "tags", "description"],
            [
                (
                    m.name,
                    m.latest_version,
                    m.task,
                    json.dumps(m.tags) if m.tags else "",
                    m.description,
                )
                for m in items
            ],
        )


@models.command("show")
def models_show(ctx: typer.Context, name: str) -> None:
    m = client(ctx).get_model(name)
    if not emit(ctx, m):
        fields(
            m.name,
            [
                ("latest version", m.latest_version),
                ("task", m.task),
                ("tags", m.tags),
                ("trusted", m.trusted),
                ("description", m.description),
                ("created", m.created_at),
                ("updated", m.updated_at),
            ],
        )


@models.command("update")
def models_update(
    ctx: typer.Context,
    name: str,
    description: Annotated[str | None, typer.Option()] = None,
    task: Annotated[str | None, typer.Option()] = None,
    tag: Tags = None,
    remove_tag: Annotated[list[str] | None, typer.Option("--remove-tag")] = None,
    trusted: Annotated[
        bool | None,
        typer.Option(
            "--trusted/--untrusted",
            help="Admin only: let pickle-based artifacts load (they run code when loaded).",
        ),
    ] = None,
) -> None:
    """Change a model's description, task, tags or (admin) trust."""
    m = client(ctx).update_model(
        name,
        description=description,
        task=task,
        tags=parse_pairs(tag, "--tag") or None,
        remove_tags=remove_tag,
        trusted=trusted,
    )
    if not emit(ctx, m):
        trust = "" if trusted is None else f" ({'trusted' if m.trusted else 'not trusted'})"
        typer.echo(f"updated model {m.name}{trust}")


@models.command("delete")
def models_delete(
    ctx: typer.Context,
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a model with all its versions and aliases."""
    if not yes:
        typer.confirm(f"delete model {name} and all its versions?", abort=True)
    client(ctx).delete_model(name)
    typer.echo(f"deleted model {name}")


# -- versions ------------------------------------------------------------------
@versions.command("upload")
def versions_upload(
    ctx: typer.Context,
    model: str,
    path: Annotated[
        Path, typer.Argument(exists=True, help="A file, or a directory (sent as tar).")
    ],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx, torchscript, …")],
    description: Annotated[str, typer.Option()] = "",
    param: Annotated[list[str] | None, typer.Option("--param", help="key=value")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="key=number")] = None,
    tag: Tags = None,
    parent: Annotated[list[str] | None, typer.Option("--parent", help="name@N")] = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="key=value")] = None,
) -> None:
    """Upload an artifact as the model's next version."""
    with transfer(f"upload {path.name}") as progress:
        v = client(ctx).upload_version(
            model,
            path,
            format,
            description=description,
            params=parse_pairs(param, "--param"),
            metrics=parse_pairs(metric, "--metric", True),
            tags=parse_pairs(tag, "--tag"),
            parents=parent or [],
            source=parse_pairs(source, "--source"),
            progress=progress,
        )
    if not emit(ctx, v):
        typer.echo(f"uploaded {v.model}@{v.version} (sha256 {v.artifact.sha256[:12]})")


@versions.command("list")
def versions_list(
    ctx: typer.Context, model: str, tag: Annotated[str | None, typer.Option()] = None
) -> None:
    items = list(client(ctx).list_versions(model, tag=tag))
    if not emit(ctx, items):
        table(
            f"{model} versions",
            ["version", "format", "aliases", "size", "metrics", "created"],
            [
                (
                    v.version,
                    v.format,
                    ", ".join(v.aliases),
                    v.artifact.size,
                    json.dumps(v.metrics) if v.metrics else "",
                    f"{v.created_at:%Y-%m-%d %H:%M}",
                )
                for v in items
            ],
        )


@versions.command("show")
def versions_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="name[@N|@alias]")]
) -> None:
    show_version(ctx, client(ctx).get_version(ref))


@versions.command("update")
def versions_update(
    ctx: typer.Context,
    ref: str,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="key=number")] = None,
    tag: Tags = None,
    remove_tag: Annotated[list[str] | None, typer.Option("--remove-tag")] = None,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Add metrics, set or remove tags (the artifact never changes)."""
    v = client(ctx).update_version(
        ref,
        metrics=parse_pairs(metric, "--metric", True) or None,
        tags=parse_pairs(tag, "--tag") or None,
        remove_tags=remove_tag,
        description=description,
    )
    show_version(ctx, v)


@versions.command("delete")
def versions_delete(
    ctx: typer.Context,
    model: str,
    version: int,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
) -> None:
    if not yes:
        typer.confirm(f"delete {model}@{version}?", abort=True)
    client(ctx).delete_version(model, version)
    typer.echo(f"deleted {model}@{version}")


@versions.command("download")
def versions_download(
    ctx: typer.Context,
    ref: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder.")] = Path("."),
) -> None:
    """Download an artifact (sha256 checked)."""
    with transfer(f"download {ref}") as progress:
        out = client(ctx).download(ref, output, progress=progress)
    typer.echo(f"saved {out}")


@versions.command("lineage")
def versions_lineage(ctx: typer.Context, ref: str) -> None:
    """Ancestors and descendants of a version."""
    lin = client(ctx).lineage(ref)
    if not emit(ctx, lin):
        rows = [("ancestor", f"{n.model}@{n.version}", n.depth) for n in lin.ancestors]
        rows += [("descendant", f"{n.model}@{n.version}", n.depth) for n in lin.descendants]
        table(f"lineage of {lin.model}@{lin.version}", ["relation", "version", "depth"], rows)


# -- aliases -------------------------------------------------------------------
@aliases.command("set")
def aliases_set(ctx: typer.Context, model: str, alias: str, version: int) -> None:
    """Point ALIAS at VERSION (creates or moves it)."""
    a = client(ctx).set_alias(model, alias, version)
    if not emit(ctx, a):
        typer.echo(f"{a.model}@{a.alias} -> {a.version}")


@aliases.command("list")
def aliases_list(ctx: typer.Context, model: str) -> None:
    items = client(ctx).list_aliases(model)
    if not emit(ctx, items):
        table(
            f"{model} aliases",
            ["alias", "version", "updated"],
            [(a.alias, a.version, f"{a.updated_at:%Y-%m-%d %H:%M:%S}") for a in items],
        )


@aliases.command("delete")
def aliases_delete(ctx: typer.Context, model: str, alias: str) -> None:
    client(ctx).delete_alias(model, alias)
    typer.echo(f"deleted alias {model}@{alias}")


@aliases.command("rollback")
def aliases_rollback(ctx: typer.Context, model: str, alias: str) -> None:
    """Move ALIAS back to its previous target."""
    a = client(ctx).rollback_alias(model, alias)
    if not emit(ctx, a):
        typer.echo(f"{a.model}@{a.alias} -> {a.version} (rolled back)")


@aliases.command("history")
def aliases_history(
    ctx: typer.Context, model: str, alias: Annotated[str | None, typer.Argument()] = None
) -> None:
    """Every change of the model's aliases, newest first."""
    items = list(client(ctx).alias_history(model, alias))
    if not emit(ctx, items):
        table(
            f"{model} alias history",
            ["when", "alias", "action", "from", "to", "who"],
            [
                (
                    f"{e.at:%Y-%m-%d %H:%M:%S}",
                    e.alias,
                    e.action,
                    e.from_version,
                    e.to_version,
                    e.actor,
                )
                for e in items
            ],
        )
