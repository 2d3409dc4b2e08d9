"""Rendering helpers: Rich tables for people, ``--json`` for scripts, progress bars."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from modelplane.client import Progress as ProgressFn

console = Console()
err_console = Console(stderr=True)


def state(ctx: typer.Context) -> dict[str, Any]:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    return obj


def emit(ctx: typer.Context, item: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> bool:
    """Print JSON when ``--json`` was given; returns True if it did."""
    if not state(ctx).get("json"):
        return False
    if isinstance(item, BaseModel):
        data: Any = item.model_dump(mode="json")
    elif isinstance(item, dict):
        data = item
    else:
        data = [i.model_dump(mode="json") for i in item]
    console.print_json(json.dumps(data))
    return True


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


def fields(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    t = Table(title=title, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in pairs:
        if isinstance(v, dict | list):
            v = json.dumps(v) if v else ""
        t.add_row(k, "" if v is None else str(v))
    console.print(t)


@contextmanager
def transfer(description: str) -> Iterator[ProgressFn]:
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def parse_pairs(values: list[str] | None, what: str, numeric: bool = False) -> dict[str, Any]:
    """``key=value`` options into a dict (values as float when ``numeric``)."""
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must look like key=value, got {item!r}")
        if numeric:
            try:
                out[key] = float(value)
            except ValueError as exc:
                raise typer.BadParameter(f"{what} {key!r}: {value!r} is not a number") from exc
        else:
            out[key] = value
    return out
