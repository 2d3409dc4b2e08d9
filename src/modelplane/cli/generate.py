"""``modelplane generate DEPLOYMENT PROMPT``: text generation from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelplane.cli.output import console, emit, err_console
from modelplane.cli.registry import client


def generate(
    ctx: typer.Context,
    deployment: str,
    prompt: str,
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it is made.")] = False,
    chat: Annotated[
        bool, typer.Option("--chat", help="Send PROMPT as a user message (chat template).")
    ] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 1.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    top_k: Annotated[int, typer.Option(help="0 = off.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop sequence (repeatable).")] = None,
) -> None:
    """Complete PROMPT with a text-generation deployment."""
    params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
    if seed is not None:
        params["seed"] = seed
    if stop:
        params["stop"] = stop
    messages = [{"role": "user", "content": prompt}] if chat else None
    text_prompt = None if chat else prompt
    with client(ctx) as c:
        if stream:
            for piece in c.stream(deployment, text_prompt, messages, max_tokens, **params):
                console.out(piece, end="", highlight=False)
            console.out("")
            return
        if messages is not None:
            done = c.chat(deployment, messages, max_tokens, **params)
        else:
            done = c.complete(deployment, prompt, max_tokens, **params)
    if emit(ctx, done):
        return
    console.out(done.text, highlight=False)
    err_console.print(
        f"[dim]{done.finish_reason}; {done.prompt_tokens} prompt + "
        f"{done.completion_tokens} completion tokens[/dim]"
    )
