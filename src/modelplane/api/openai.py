"""OpenAI-compatible ``POST /v1/embeddings`` for embedding deployments.

Only translates: an OpenAI request becomes ``InferenceRequest``s for the
deployment named by ``model`` (its one string input, its ``embedding`` output),
and the answer takes OpenAI's shape, errors included
(``{"error": {"message", "type", "param", "code"}}``). The ``openai`` SDK works
unchanged, including its default ``encoding_format="base64"`` (little-endian
float32, base64).

``usage`` counts the tokens the model read (special tokens included, after
truncation) from the runtime's ``tokens`` output; a model without one is
metered by whitespace-separated words. A list longer than the deployment's
``max_batch_size`` is sent as several requests, which the batcher may run
together.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from modelplane.api.deps import tenant
from modelplane.api.fastpath import Handler, Headers, Matcher, Result
from modelplane.errors import ModelplaneError, NotFound, Unavailable
from modelplane.schemas.registry import Signature, TensorSpec
from modelplane.serving.dataplane import DataPlane, InferenceRequest, InferenceResponse
from modelplane.serving.manager import Deployed

router = APIRouter(tags=["inference: OpenAI-compatible"])
PATH = "/v1/embeddings"
MAX_INPUTS = 2048  # OpenAI's own limit per request
JSON = [(b"content-type", b"application/json")]


class EmbeddingRequest(BaseModel):
    """For the documentation; requests are parsed by ``parse`` so errors keep OpenAI's shape."""

    input: str | list[str]
    model: str
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = None
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class OpenAIError(ModelplaneError):
    """A client error with OpenAI's ``param`` and ``code``."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def invalid(message: str, param: str | None = None) -> OpenAIError:
    """A 400 in OpenAI's shape (``param`` names the field at fault)."""
    return OpenAIError(400, message, param, "invalid_value" if param else None)


def request_doc(body: bytes) -> tuple[dict[str, Any], str]:
    """(the JSON object, its ``model``) of an OpenAI request body; 400s in OpenAI's shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise invalid("request body must be a JSON object")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' must be a non-empty string (the deployment name)", "model")
    return doc, model


def parse(body: bytes) -> tuple[str, list[str], str, int | None]:
    """(model, texts, encoding_format, dimensions) from a request body."""
    doc, model = request_doc(body)
    raw = doc.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise invalid(
            "'input' must be a string or a list of strings (token arrays are not supported)",
            "input",
        )
    if not texts:
        raise invalid("'input' must not be empty", "input")
    if len(texts) > MAX_INPUTS:
        raise invalid(f"'input' holds {len(texts)} items; at most {MAX_INPUTS} allowed", "input")
    if any(not t for t in texts):
        raise invalid("'input' must not contain empty strings", "input")
    fmt = doc.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dims = doc.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise invalid("'dimensions' must be a positive integer", "dimensions")
    return model, texts, fmt, dims


def embedding_names(name: str, sig: Signature) -> tuple[str, TensorSpec, str | None]:
    """(text input, embedding output, tokens output or None) of an embedding deployment."""
    strings = [s for s in sig.inputs if s.dtype == "string"]
    floats = [s for s in sig.outputs if s.dtype.startswith("float") and len(s.shape) == 2]
    out = next((s for s in sig.outputs if s.name == "embedding"), None)
    out = out or (floats[0] if len(floats) == 1 else None)
    if len(sig.inputs) != 1 or len(strings) != 1 or out is None:
        raise invalid(f"model {name!r} is not an embedding model", "model")
    tokens = next((s.name for s in sig.outputs if s.name == "tokens"), None)
    return strings[0].name, out, tokens


async def embeddings(dp: DataPlane, tenant_id: str, body: bytes) -> Result:
    """One embeddings call: (status, headers, body). Never raises ModelplaneError."""
    try:
        model, texts, fmt, dims = parse(body)
        try:
            dep = dp.deployment(tenant_id, model)
        except NotFound as exc:
            raise OpenAIError(
                404, f"model {model!r} not found", "model", "model_not_found"
            ) from exc
        if dep.active is None:
            raise Unavailable(f"model {model!r} is {dep.state}: {dep.reason or 'not loaded'}")
        text_in, emb_spec, tok_out = embedding_names(model, dep.active.signature)
        emb_out, width = emb_spec.name, emb_spec.shape[-1]
        if dims is not None and width > 0 and dims != width:
            raise invalid(
                f"model {model!r} only makes {width}-dimensional embeddings", "dimensions"
            )
        outputs = [emb_out, tok_out] if tok_out else [emb_out]
        parts = await _infer_chunks(dp, tenant_id, dep, text_in, texts, outputs)
    except ModelplaneError as exc:
        return error_result(exc)
    vectors = np.concatenate([p.outputs[emb_out] for p in parts]).astype("<f4", copy=False)
    if tok_out:
        tokens = int(sum(int(p.outputs[tok_out].sum()) for p in parts))
    else:
        tokens = sum(len(t.split()) for t in texts)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(row.tobytes()).decode() if fmt == "base64" else row,
        }
        for i, row in enumerate(vectors)
    ]
    doc = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return 200, JSON, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


async def _infer_chunks(
    dp: DataPlane, tenant_id: str, dep: Deployed, text_in: str, texts: list[str], outputs: list[str]
) -> list[InferenceResponse]:
    """At most ``max_batch_size`` rows per request, all in flight at once, answers in order."""
    step = max(1, dep.config.max_batch_size)
    requests = [
        InferenceRequest({text_in: np.array(texts[i : i + step], dtype=object)}, outputs)
        for i in range(0, len(texts), step)
    ]
    return list(await asyncio.gather(*(dp.infer(tenant_id, dep.name, None, r) for r in requests)))


def error_result(exc: ModelplaneError) -> Result:
    headers = list(JSON)
    if isinstance(exc, Unavailable):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    if exc.status == 429:
        kind = "rate_limit_error"
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None)
    error = {"message": exc.message, "type": kind, "param": param, "code": code}
    return exc.status, headers, orjson.dumps({"error": error})


def fast_routes(dp: DataPlane) -> Matcher:
    """The fast-path matcher for ``POST /v1/embeddings``."""

    def match(method: str, path: str) -> Handler | None:
        if method != "POST" or path.rstrip("/") != PATH:
            return None

        def handle(headers: Headers, body: bytes, tenant_id: str) -> Awaitable[Result]:
            return embeddings(dp, tenant_id, body)

        return handle

    return match


def plane(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


@router.post(
    PATH,
    response_model=EmbeddingResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}},
        }
    },
)
async def create_embeddings(
    request: Request,
    dp: Annotated[DataPlane, Depends(plane)],
    t: Annotated[str, Depends(tenant)],
) -> Any:
    """Embed text with an embedding deployment (``model`` is the deployment name)."""
    status, headers, body = await embeddings(dp, t, await request.body())
    return Response(body, status, {k.decode(): v.decode() for k, v in headers})
