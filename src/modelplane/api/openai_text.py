"""OpenAI-compatible text generation: ``POST /v1/completions``, ``POST /v1/chat/completions``
and ``GET /v1/models``.

Only translates: a request becomes one generation stream per prompt and choice
(``DataPlane.generate``; ``n`` > 1 opens ``n`` streams that run side by side in
the worker's continuous batch), and the streams' token events become OpenAI's
answer, or with ``stream: true`` server-sent events in OpenAI's chunk format
ending with ``data: [DONE]``. A client that disconnects mid-stream closes the
streams, which cancels its sequences in the worker at the next step. Errors keep
OpenAI's shape. ``GET /v1/models`` lists the caller's text deployments
(``GET /v1/models/{m}`` stays TF Serving's status route).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from modelplane.api.deps import tenant
from modelplane.api.fastpath import Handler, Headers, Matcher, Result, Streamed
from modelplane.api.openai import JSON, OpenAIError, error_result, plane
from modelplane.api.openai_text_codec import (
    DONE,
    Kind,
    TextRequest,
    choice,
    delta,
    envelope,
    finish,
    logprobs_doc,
    parse,
    sse,
    usage,
)
from modelplane.api.openai_text_metrics import Observation, TextMetrics
from modelplane.errors import BadRequest, ModelplaneError, NotFound
from modelplane.monitoring.metrics import Metrics
from modelplane.monitoring.usage import UsageMeter
from modelplane.serving.dataplane import DataPlane
from modelplane.serving.streams import Frame, TextStream

router = APIRouter(tags=["inference: OpenAI-compatible"])
PATHS: dict[str, Kind] = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


NO_METRICS = TextMetrics()


async def generate(
    dp: DataPlane, tenant_id: str, kind: Kind, body: bytes, observe: TextMetrics = NO_METRICS
) -> Result | Streamed:
    """One completions or chat call. Never raises ModelplaneError.

    Token use is metered per tenant and deployment (usage and metrics); a stream the
    client leaves early is metered with the tokens made until then.
    """
    param = "messages" if kind == "chat" else "prompt"
    try:
        req = parse(kind, body)
        obs = observe.start(tenant_id, req.model)
        streams = await _open(dp, tenant_id, req, param)
    except ModelplaneError as exc:
        return error_result(exc)
    if req.stream:
        return Streamed(200, SSE_HEADERS, _Chunks(_sse(req, streams, obs), streams))
    try:
        doc = await _answer(req, streams, obs)
    except ModelplaneError as exc:
        return error_result(_translated(exc, param))
    finally:
        await _close(streams)
    obs.finished(doc["usage"]["prompt_tokens"], doc["usage"]["completion_tokens"])
    return 200, JSON, orjson.dumps(doc)


def _translated(exc: ModelplaneError, param: str) -> ModelplaneError:
    if isinstance(exc, BadRequest) and not isinstance(exc, OpenAIError):
        code = "context_length_exceeded" if "context" in exc.message else None
        return OpenAIError(400, exc.message, param, code)
    return exc


async def _open(dp: DataPlane, tenant_id: str, req: TextRequest, param: str) -> list[TextStream]:
    """All the request's streams, or none: a refusal of one closes the others."""
    try:
        dp.deployment(tenant_id, req.model)
    except NotFound as exc:
        raise OpenAIError(
            404, f"model {req.model!r} not found", "model", "model_not_found"
        ) from exc
    tasks = [asyncio.ensure_future(dp.generate(tenant_id, req.model, r)) for r in req.requests]
    try:
        await asyncio.wait(tasks)
    finally:  # also when the client left while we waited for slots
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)
        opened = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
        failed = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
        if failed or len(opened) < len(tasks):
            await _close(opened)
    for error in failed:
        if isinstance(error, ModelplaneError):
            raise _translated(error, param)
    if failed and failed[0] is not None:
        raise failed[0]
    return opened


async def _close(streams: list[TextStream]) -> None:
    for s in streams:
        with contextlib.suppress(Exception):
            await s.aclose()


async def _events(streams: list[TextStream]) -> AsyncIterator[tuple[int, Frame]]:
    """(choice index, frame) from every stream as frames arrive."""
    if len(streams) == 1:
        async for frame in streams[0]:
            yield 0, frame
        return
    queue: asyncio.Queue[tuple[int, Frame | BaseException | None]] = asyncio.Queue()

    async def feed(i: int, stream: TextStream) -> None:
        try:
            async for frame in stream:
                queue.put_nowait((i, frame))
            queue.put_nowait((i, None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait((i, exc))

    tasks = [asyncio.create_task(feed(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, item = await queue.get()
            if item is None:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # streams close in their tasks


def _usage(req: TextRequest, streams: list[TextStream], completion: int) -> dict[str, int]:
    prompt: dict[int, int] = {}
    for p, s in zip(req.prompt_of, streams, strict=True):
        prompt.setdefault(p, s.prompt_tokens)
    return usage(sum(prompt.values()), completion)


async def _answer(req: TextRequest, streams: list[TextStream], obs: Observation) -> dict[str, Any]:
    texts: list[list[str]] = [[] for _ in streams]
    logprobs: list[list[dict[str, Any]]] = [[] for _ in streams]
    reasons: list[str | None] = [None] * len(streams)
    completion = 0
    async for i, frame in _events(streams):
        if frame.get("tokens"):
            obs.first_token()
        texts[i].append(str(frame.get("text") or ""))
        logprobs[i].extend(frame.get("logprobs") or [])
        if frame.get("event") == "done":
            reasons[i] = finish(frame.get("finish_reason"))
            completion += int(frame.get("completion_tokens", 0))
    choices = [
        choice(
            req.kind,
            i,
            "".join(texts[i]),
            reasons[i],
            logprobs_doc(req.kind, logprobs[i]) if req.logprobs is not None else None,
        )
        for i in range(len(streams))
    ]
    return {
        **envelope(req, chunk=False),
        "choices": choices,
        "usage": _usage(req, streams, completion),
    }


async def _sse(
    req: TextRequest, streams: list[TextStream], obs: Observation
) -> AsyncIterator[bytes]:
    head = envelope(req, chunk=True)
    if req.include_usage:
        head["usage"] = None

    def chunk(*choices: dict[str, Any]) -> bytes:
        return sse({**head, "choices": list(choices)})

    want_logprobs = req.logprobs is not None
    offsets = [0] * len(streams)
    made = [0] * len(streams)  # completion tokens per choice so far
    if req.kind == "chat":
        for i in range(len(streams)):
            yield chunk(delta("chat", i, "", None, None, role=True))
    try:
        async for i, frame in _events(streams):
            text = str(frame.get("text") or "")
            items = frame.get("logprobs") or []
            lp = logprobs_doc(req.kind, items, offsets[i]) if want_logprobs and items else None
            offsets[i] += sum(len(str(e.get("token", ""))) for e in items)
            new = len(frame.get("tokens") or [])
            if new:
                obs.first_token()
            made[i] += new
            if frame.get("event") == "done":
                made[i] = int(frame.get("completion_tokens", made[i]))
                reason = finish(frame.get("finish_reason"))
                yield chunk(delta(req.kind, i, text or None, reason, lp))
            elif text or lp:
                yield chunk(delta(req.kind, i, text, None, lp))
        if req.include_usage:
            yield sse({**head, "choices": [], "usage": _usage(req, streams, sum(made))})
        yield DONE
    except ModelplaneError as exc:  # the response has started: the error goes in the stream
        _, _, body = error_result(_translated(exc, "prompt"))
        yield b"data: " + body + b"\n\n"
    finally:  # also when the client left: what was made is metered
        obs.finished(_usage(req, streams, 0)["prompt_tokens"], sum(made))


class _Chunks:
    """The SSE body; closing it (done, or client gone) closes every stream of the request."""

    def __init__(self, gen: AsyncIterator[bytes], streams: list[TextStream]) -> None:
        self._gen, self._streams = gen, streams

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()  # type: ignore[attr-defined]
        finally:
            await _close(self._streams)


def fast_routes(
    dp: DataPlane, usage: UsageMeter | None = None, metrics: Metrics | None = None
) -> Matcher:
    """The fast-path matcher for ``POST /v1/completions`` and ``POST /v1/chat/completions``
    (token use goes to ``usage`` and ``metrics``, which also gets the sequences gauge)."""
    observe = TextMetrics(metrics, usage)
    observe.install_gauge(dp.manager.deployments)

    def match(method: str, path: str) -> Handler | None:
        kind = PATHS.get(path.rstrip("/")) if method == "POST" else None
        if kind is None:
            return None

        def handle(headers: Headers, body: bytes, tenant_id: str) -> Awaitable[Result | Streamed]:
            return generate(dp, tenant_id, kind, body, observe)

        return handle

    return match


# -- documented routes (the fast path answers these calls first) ---------------------
async def _respond(dp: DataPlane, t: str, kind: Kind, request: Request) -> Response:
    state = request.app.state
    observe = TextMetrics(getattr(state, "metrics", None), getattr(state, "usage", None))
    result = await generate(dp, t, kind, await request.body(), observe)
    if isinstance(result, Streamed):
        headers = {k.decode(): v.decode() for k, v in result.headers}
        return StreamingResponse(result.chunks, result.status, headers)
    status, headers_, body = result
    return Response(body, status, {k.decode(): v.decode() for k, v in headers_})


def _doc(summary: str, fields: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": [*list(fields)[:1], "model"], "properties": fields}
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
    }


_TEXTS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_COMMON = {
    "model": {"type": "string"},
    "max_tokens": {"type": "integer"},
    "temperature": {"type": "number"},
    "top_p": {"type": "number"},
    "top_k": {"type": "integer"},
    "seed": {"type": "integer"},
    "n": {"type": "integer"},
    "stop": _TEXTS,
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object"},
    "presence_penalty": {"type": "number"},
    "frequency_penalty": {"type": "number"},
    "repetition_penalty": {"type": "number"},
}


@router.post(
    "/v1/completions",
    openapi_extra=_doc(
        "Complete a prompt",
        {
            "prompt": {
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            },
            **_COMMON,
            "logprobs": {"type": "integer"},
        },
    ),
)
async def create_completion(
    request: Request, dp: Annotated[DataPlane, Depends(plane)], t: Annotated[str, Depends(tenant)]
) -> Response:
    """Text completion with a text-generation deployment (``model`` = deployment name)."""
    return await _respond(dp, t, "completion", request)


@router.post(
    "/v1/chat/completions",
    openapi_extra=_doc(
        "Answer a chat",
        {
            "messages": {"type": "array", "items": {"type": "object"}},
            **_COMMON,
            "max_completion_tokens": {"type": "integer"},
            "logprobs": {"type": "boolean"},
            "top_logprobs": {"type": "integer"},
        },
    ),
)
async def create_chat_completion(
    request: Request, dp: Annotated[DataPlane, Depends(plane)], t: Annotated[str, Depends(tenant)]
) -> Response:
    """Chat completion: messages rendered with the model's chat template."""
    return await _respond(dp, t, "chat", request)


@router.get("/v1/models")
async def list_models(
    dp: Annotated[DataPlane, Depends(plane)], t: Annotated[str, Depends(tenant)]
) -> dict[str, Any]:
    """The caller's text-generation deployments, in OpenAI's list shape."""
    data = [
        {
            "id": d.name,
            "object": "model",
            "created": int(d.created_at.timestamp()),
            "owned_by": d.tenant,
        }
        for d in dp.text_deployments(t)
    ]
    return {"object": "list", "data": data}
