"""OpenAI completions and chat requests ⇄ generation requests and OpenAI's answer shapes.

``parse`` checks a ``/v1/completions`` or ``/v1/chat/completions`` body and turns it
into the generation requests of the worker contract (one per prompt and choice:
``n`` choices of a seeded request use seeds ``seed``, ``seed + 1``, …). The
builders below shape answers and stream chunks as OpenAI does, so the ``openai``
SDK parses them unchanged. Unsupported options (``echo``, ``suffix``,
``best_of`` > ``n``, token-array prompts) are refused with 400, not ignored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from modelplane.api.openai import invalid, request_doc

Kind = Literal["completion", "chat"]
MAX_N = 32
MAX_STOP = 16
MAX_LOGPROBS = 20
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass
class TextRequest:
    kind: Kind
    model: str
    stream: bool
    include_usage: bool
    # One generation request per choice, in choice order; prompt_of[i] = its prompt's index.
    requests: list[dict[str, Any]] = field(default_factory=list)
    prompt_of: list[int] = field(default_factory=list)
    logprobs: int | None = None
    id: str = ""
    created: int = 0


def _number(doc: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = doc.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise invalid(f"'{name}' must be a number from {lo:g} to {hi:g}", name)
    return float(value)


def _integer(doc: dict[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise invalid(f"'{name}' must be an integer >= {lo}", name)
    if hi is not None and value > hi:
        raise invalid(f"'{name}' must be at most {hi}", name)
    return value


def _stop(doc: dict[str, Any]) -> list[str]:
    raw = doc.get("stop")
    stops = [raw] if isinstance(raw, str) else ([] if raw is None else raw)
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise invalid("'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP:
        raise invalid(f"'stop' holds {len(stops)} sequences; at most {MAX_STOP} allowed", "stop")
    return stops


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text ones are understood
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid(f"messages[{i}]: only text content parts are supported", "messages")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise invalid(f"messages[{i}].content must be a string or a list of text parts", "messages")


def _messages(doc: dict[str, Any]) -> list[dict[str, str]]:
    raw = doc.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise invalid(
                f"messages[{i}] must be an object with a 'role' in {sorted(ROLES)}", "messages"
            )
        out.append({"role": str(m["role"]), "content": _content(m, i)})
    return out


def _prompts(doc: dict[str, Any]) -> list[str]:
    raw = doc.get("prompt")
    prompts = [raw] if isinstance(raw, str) else raw
    if not isinstance(prompts, list) or not prompts:
        raise invalid("'prompt' must be a string or a non-empty list of strings", "prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise invalid("'prompt' must be text; token arrays are not supported", "prompt")
    return prompts


def parse(kind: Kind, body: bytes) -> TextRequest:
    doc, model = request_doc(body)
    for name in ("echo", "suffix"):
        if doc.get(name):
            raise invalid(f"'{name}' is not supported", name)
    n = _integer(doc, "n", 1, MAX_N) or 1
    best_of = _integer(doc, "best_of", 1, MAX_N)
    if best_of is not None and best_of != n:
        raise invalid("'best_of' other than 'n' is not supported", "best_of")
    stream = doc.get("stream") or False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean", "stream")
    options = doc.get("stream_options") or {}
    if not isinstance(options, dict):
        raise invalid("'stream_options' must be an object", "stream_options")
    include_usage = bool(options.get("include_usage")) and stream
    if kind == "chat":
        logprobs = doc.get("logprobs") or False
        if not isinstance(logprobs, bool):
            raise invalid("'logprobs' must be a boolean", "logprobs")
        top = _integer(doc, "top_logprobs", 0, MAX_LOGPROBS)
        if top is not None and not logprobs:
            raise invalid("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        k = (top or 0) if logprobs else None
        max_tokens = _integer(doc, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = _integer(doc, "max_tokens", 1)
        inputs: list[dict[str, Any]] = [{"messages": _messages(doc)}]
    else:
        k = _integer(doc, "logprobs", 0, MAX_LOGPROBS)
        max_tokens = _integer(doc, "max_tokens", 1)
        if "max_tokens" not in doc:
            max_tokens = COMPLETION_DEFAULT_MAX_TOKENS
        inputs = [{"prompt": p} for p in _prompts(doc)]
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise invalid("'seed' must be an integer", "seed")
    top_k = doc.get("top_k", 0)
    if top_k == -1:  # vLLM's spelling of "off"
        top_k = 0
    common = {
        "max_tokens": max_tokens,
        "temperature": _number(doc, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(doc, "top_p", 1.0, 0.0, 1.0),
        "top_k": _integer({"top_k": top_k}, "top_k", 0) or 0,
        "stop": _stop(doc),
        "presence_penalty": _number(doc, "presence_penalty", 0.0, -2.0, 2.0),
        "frequency_penalty": _number(doc, "frequency_penalty", 0.0, -2.0, 2.0),
        "repetition_penalty": _number(doc, "repetition_penalty", 1.0, 0.01, 10.0),
        "logprobs": k,
    }
    if common["top_p"] == 0.0:
        raise invalid("'top_p' must be greater than 0", "top_p")
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    req = TextRequest(kind, model, stream, include_usage, logprobs=k)
    req.id, req.created = f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())
    for p, source in enumerate(inputs):
        for _ in range(n):
            index = len(req.requests)
            s = None if seed is None else seed + index
            req.requests.append({**source, **common, "seed": s})
            req.prompt_of.append(p)
    return req


# -- answers -------------------------------------------------------------------
def finish(reason: Any) -> str:
    return "length" if reason == "length" else "stop"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def logprobs_doc(kind: Kind, items: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    """Per-token logprobs (worker frames' ``logprobs``) in the kind's OpenAI shape."""
    if kind == "chat":

        def entry(e: dict[str, Any]) -> dict[str, Any]:
            token = str(e.get("token", ""))
            return {"token": token, "logprob": e.get("logprob"), "bytes": list(token.encode())}

        content = [
            {**entry(e), "top_logprobs": [entry(t) for t in e.get("top") or []]} for e in items
        ]
        return {"content": content, "refusal": None}
    offsets, at = [], offset
    for e in items:
        offsets.append(at)
        at += len(str(e.get("token", "")))
    return {
        "tokens": [e.get("token") for e in items],
        "token_logprobs": [e.get("logprob") for e in items],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top") or []} for e in items],
        "text_offset": offsets,
    }


def choice(
    kind: Kind, index: int, text: str, reason: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    if kind == "chat":
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason}
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}


def delta(
    kind: Kind, index: int, text: str | None, reason: str | None, logprobs: dict[str, Any] | None,
    role: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One choice of a stream chunk (``text`` None: an empty delta, as in a final chunk)."""
    if kind == "chat":
        d: dict[str, Any] = {}
        if role:
            d["role"] = "assistant"
        if text is not None:
            d["content"] = text
        return {"index": index, "delta": d, "logprobs": logprobs, "finish_reason": reason}
    return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": reason}


def envelope(req: TextRequest, chunk: bool) -> dict[str, Any]:
    if req.kind == "chat":
        obj = "chat.completion.chunk" if chunk else "chat.completion"
    else:
        obj = "text_completion"
    return {
        "id": req.id,
        "object": obj,
        "created": req.created,
        "model": req.model,
        "system_fingerprint": None,
    }


def sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"
