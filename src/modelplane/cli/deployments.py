"""``modelplane deploy`` and ``modelplane deployments …``: serving over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelplane.cli.output import emit, fields, table
from modelplane.cli.registry import client
from modelplane.schemas.serving import Deployment

deployments = typer.Typer(
    help="List, inspect, change and remove deployments.", no_args_is_help=True
)

BatchSize = Annotated[int | None, typer.Option(help="Most rows per batch.")]
Delay = Annotated[float | None, typer.Option(help="Longest wait for a batch to fill (ms).")]
Queue = Annotated[int | None, typer.Option(help="Requests that may wait; more get 503.")]
Timeout = Annotated[int | None, typer.Option(help="Default deadline per request (ms).")]
Instances = Annotated[int | None, typer.Option(help="Worker processes.")]
Threads = Annotated[int | None, typer.Option(help="Runtime threads per worker.")]
CachedTokens = Annotated[
    int | None, typer.Option(help="Text generation: KV-cache tokens per instance.")
]


def _config(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def show(ctx: typer.Context, d: Deployment) -> None:
    if emit(ctx, d):
        return
    fields(
        f"deployment {d.name}",
        [
            ("model", d.model),
            ("state", d.state + (f" ({d.reason})" if d.reason else "")),
            ("version", d.version),
            ("format", d.format),
            ("batching", f"max {d.max_batch_size} rows, wait {d.max_batch_delay_ms} ms"),
            ("queue / timeout", f"{d.max_queue} requests / {d.timeout_ms} ms"),
            ("instances", f"{d.instances} ({sum(w.alive for w in d.workers)} alive)"),
            ("restarts", d.restarts),
            ("batches / requests", f"{d.batches} / {d.batched_items}"),
            *_generation(d),
        ],
    )


def _generation(d: Deployment) -> list[tuple[str, object]]:
    if d.generation is None:
        return []
    g = d.generation
    return [
        ("text generation", f"context {g.get('context_length')} tokens, "
         f"{g.get('max_seqs')} sequences, {g.get('max_cached_tokens')} cached tokens"),
        ("sequences", f"{d.active_sequences} running, {d.queued_sequences} waiting, "
         f"{d.sequences_total} served"),
    ]  # fmt: skip


def deploy(
    ctx: typer.Context,
    name: str,
    model: Annotated[str, typer.Argument(help="name, name@3 or name@alias")],
    max_batch_size: BatchSize = None,
    max_batch_delay_ms: Delay = None,
    max_queue: Queue = None,
    timeout_ms: Timeout = None,
    instances: Instances = None,
    threads: Threads = None,
    max_cached_tokens: CachedTokens = None,
    wait: Annotated[bool, typer.Option(help="Wait until it serves.")] = True,
) -> None:
    """Serve a model version as deployment NAME (follows an alias when given one)."""
    c = client(ctx)
    d = c.deploy(
        name,
        model,
        **_config(
            max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
            max_queue=max_queue, timeout_ms=timeout_ms, instances=instances, threads=threads,
            max_cached_tokens=max_cached_tokens,
        ),
    )  # fmt: skip
    if wait:
        d = c.wait_ready(name)
    show(ctx, d)


@deployments.command("list")
def deployments_list(ctx: typer.Context) -> None:
    items = client(ctx).list_deployments()
    if not emit(ctx, items):
        table(
            "deployments",
            ["name", "model", "version", "state", "instances", "reason"],
            [(d.name, d.model, d.version, d.state, d.instances, d.reason) for d in items],
        )


@deployments.command("show")
def deployments_show(ctx: typer.Context, name: str) -> None:
    show(ctx, client(ctx).get_deployment(name))


@deployments.command("update")
def deployments_update(
    ctx: typer.Context,
    name: str,
    model: Annotated[str | None, typer.Option(help="A new model reference.")] = None,
    max_batch_size: BatchSize = None,
    max_batch_delay_ms: Delay = None,
    max_queue: Queue = None,
    timeout_ms: Timeout = None,
    instances: Instances = None,
    threads: Threads = None,
    max_cached_tokens: CachedTokens = None,
) -> None:
    """Change batching live, or swap model/instances with no downtime."""
    d = client(ctx).update_deployment(
        name,
        **_config(
            model=model, max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
            max_queue=max_queue, timeout_ms=timeout_ms, instances=instances, threads=threads,
            max_cached_tokens=max_cached_tokens,
        ),
    )  # fmt: skip
    show(ctx, d)


@deployments.command("delete")
def deployments_delete(
    ctx: typer.Context, name: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False
) -> None:
    """Stop serving and free the workers' memory."""
    if not yes:
        typer.confirm(f"delete deployment {name}?", abort=True)
    client(ctx).delete_deployment(name)
    typer.echo(f"deleted deployment {name}")
