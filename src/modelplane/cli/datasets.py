"""``modelplane datasets upload|list|show|download|delete``: datasets over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelplane.cli.output import emit, fields, parse_pairs, table, transfer
from modelplane.cli.registry import client
from modelplane.schemas.datasets import FORMATS, Dataset

datasets = typer.Typer(
    help="Upload, inspect, download and delete datasets (CSV, Parquet, NPZ, JSONL, images).",
    no_args_is_help=True,
)


def _rows(d: Dataset) -> str:
    return "" if d.schema_.rows is None else str(d.schema_.rows)


def show_dataset(ctx: typer.Context, d: Dataset) -> None:
    if emit(ctx, d):
        return
    extra = dict(d.schema_.extra)
    classes = extra.pop("classes", None)
    fields(
        d.name,
        [
            ("format", d.format),
            ("rows", _rows(d)),
            ("sha256", d.sha256),
            ("size", d.size),
            ("tags", d.tags),
            ("description", d.description),
            ("created", f"{d.created_at:%Y-%m-%d %H:%M:%S} by {d.created_by}"),
            *[(k, v) for k, v in extra.items() if v is not None],
        ],
    )
    table(
        f"{d.name} columns",
        ["name", "dtype", "shape"],
        [(c.name, c.dtype, c.shape) for c in d.schema_.columns],
    )
    if classes:
        table(f"{d.name} classes", ["class", "images"], list(classes.items()))


@datasets.command("upload")
def datasets_upload(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(exists=True, help="A file, or a folder of <class>/<image> (zipped).")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.")],
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"{', '.join(FORMATS)}; default: from the extension."),
    ] = None,
    description: Annotated[str, typer.Option()] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="key=value (repeatable)")] = None,
) -> None:
    """Upload a dataset; the server infers and records its schema."""
    with transfer(f"upload {path.name}") as progress:
        d = client(ctx).upload_dataset(
            name,
            path,
            format,
            description=description,
            tags=parse_pairs(tag, "--tag"),
            progress=progress,
        )
    if not emit(ctx, d):
        typer.echo(
            f"uploaded dataset {d.name} ({d.format}, {_rows(d) or '?'} rows, "
            f"sha256 {d.sha256[:12]})"
        )


@datasets.command("list")
def datasets_list(
    ctx: typer.Context, prefix: Annotated[str, typer.Option(help="Name prefix.")] = ""
) -> None:
    """List datasets (all pages)."""
    items = list(client(ctx).list_datasets(prefix=prefix))
    if not emit(ctx, items):
        table(
            "datasets",
            ["name", "format", "rows", "columns", "size", "created", "description"],
            [
                (
                    d.name,
                    d.format,
                    _rows(d),
                    len(d.schema_.columns),
                    d.size,
                    f"{d.created_at:%Y-%m-%d %H:%M}",
                    d.description,
                )
                for d in items
            ],
        )


@datasets.command("show")
def datasets_show(ctx: typer.Context, name: str) -> None:
    """A dataset with its columns (and image classes)."""
    show_dataset(ctx, client(ctx).get_dataset(name))


@datasets.command("download")
def datasets_download(
    ctx: typer.Context,
    name: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder.")] = Path("."),
) -> None:
    """Download a dataset's file (sha256 checked)."""
    with transfer(f"download {name}") as progress:
        out = client(ctx).download_dataset(name, output, progress=progress)
    typer.echo(f"saved {out}")


@datasets.command("delete")
def datasets_delete(
    ctx: typer.Context,
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    if not yes:
        typer.confirm(f"delete dataset {name}?", abort=True)
    client(ctx).delete_dataset(name)
    typer.echo(f"deleted dataset {name}")
