"""SDK calls for text generation (``Client.complete``, ``Client.chat``, ``Client.stream``).

They speak the server's OpenAI-compatible routes (``/v1/completions``,
``/v1/chat/completions``), so anything the ``openai`` SDK can send works here
too; ``params`` are passed through as OpenAI fields (``temperature``, ``top_p``,
``top_k``, ``seed``, ``stop``, ``n``, penalties, ``logprobs``, …). The ``openai``
SDK itself works unchanged against the same server (``base_url=<server>/v1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from pydantic import BaseModel

from modelplane.errors import error_for_status

if TYPE_CHECKING:
    from modelplane.client.http import Client


class Completion(BaseModel):
    """A finished generation: the first choice's text, every choice, and the token usage."""

    text: str
    finish_reason: str | None
    choices: list[str]
    prompt_tokens: int
    completion_tokens: int
    raw: dict[str, Any]


def _raise(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        error = resp.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except ValueError:
        message = None
    raise error_for_status(resp.status_code, str(message or resp.text or resp.reason_phrase))


def _body(
    deployment: str, prompt: str | None, messages: list[dict[str, Any]] | None,
    max_tokens: int | None, params: dict[str, Any],
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    body: dict[str, Any] = {"model": deployment, **params}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if messages is not None:
        return "/v1/chat/completions", {**body, "messages": messages}
    return "/v1/completions", {**body, "prompt": prompt}


def complete(
    client: Client,
    deployment: str,
    prompt: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
    **params: Any,
) -> Completion:
    path, body = _body(deployment, prompt, messages, max_tokens, {**params, "stream": False})
    resp = client._http.post(path, json=body)
    _raise(resp)
    doc: dict[str, Any] = resp.json()
    chat = messages is not None
    texts = [str((c["message"]["content"] if chat else c["text"]) or "") for c in doc["choices"]]
    usage = doc.get("usage") or {}
    return Completion(
        text=texts[0] if texts else "",
        finish_reason=doc["choices"][0].get("finish_reason") if doc["choices"] else None,
        choices=texts,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        raw=doc,
    )


def stream(
    client: Client,
    deployment: str,
    prompt: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
    **params: Any,
) -> Iterator[str]:
    """Text pieces of the first choice as the server sends them (server-sent events)."""
    path, body = _body(deployment, prompt, messages, max_tokens, {**params, "stream": True})
    with client._http.stream("POST", path, json=body) as resp:
        if not resp.is_success:
            resp.read()
            _raise(resp)
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                return
            chunk = orjson.loads(data)
            if "error" in chunk:
                error = chunk["error"]
                raise error_for_status(int(error.get("status", 503)), str(error.get("message")))
            for c in chunk.get("choices") or []:
                if c.get("index", 0) != 0:
                    continue
                piece = c["delta"].get("content") if "delta" in c else c.get("text")
                if piece:
                    yield str(piece)
