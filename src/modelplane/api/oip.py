"""Open Inference Protocol v2 (KServe / Triton / MLServer) front end.

Only translates: HTTP ⇄ ``InferenceRequest``/``InferenceResponse``. ``infer`` is
shared by the FastAPI route (documentation, fallback) and the raw ASGI fast path
that serves it in production.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from modelplane import __version__
from modelplane.api import oip_codec
from modelplane.api.deps import tenant
from modelplane.api.fastpath import Handler, Headers, Matcher, Result
from modelplane.api.health import ready_checks
from modelplane.errors import ModelplaneError, NotFound, Unavailable
from modelplane.serving.dataplane import DataPlane
from modelplane.serving.manager import Deployed

router = APIRouter(tags=["inference: open inference protocol v2"])
Tenant = Annotated[str, Depends(tenant)]
PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "sklearn_onnx": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "torch_export": "pytorch_export",
    "transformers": "transformers",
    "skops": "sklearn",
}
JSON = [(b"content-type", b"application/json")]


def plane(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


Plane = Annotated[DataPlane, Depends(plane)]


def parse_version(version: str | None) -> int | None:
    if version is None:
        return None
    if not (version.isascii() and version.isdigit()):
        raise NotFound(f"version {version!r} not found")
    return int(version)


def error_body(exc: ModelplaneError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    import orjson

    headers = list(JSON)
    if isinstance(exc, Unavailable):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    return exc.status, headers, orjson.dumps({"error": exc.message})


async def infer(
    dp: DataPlane,
    tenant_id: str,
    model: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
    timeout_ms: str | None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One OIP infer call: (status, headers, body). Never raises ModelplaneError."""
    try:
        req, all_binary, binary_names = oip_codec.decode(body, header_length)
        if timeout_ms is not None and req.timeout_ms is None:
            try:
                value = float(timeout_ms)
            except ValueError:
                value = math.nan
            # A header that is not a finite number is ignored (the deployment's default holds).
            req.timeout_ms = max(value, 0.001) if math.isfinite(value) else None
        resp = await dp.infer(tenant_id, model, parse_version(version), req)
        out, json_len = oip_codec.encode(resp, all_binary, binary_names)
    except ModelplaneError as exc:
        return error_body(exc)
    if json_len is None:
        return 200, JSON, out
    return (
        200,
        [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(json_len).encode()),
        ],
        out,
    )


def _match_infer(path: str) -> tuple[str, str | None] | None:
    # /v2/models/{m}/infer  or  /v2/models/{m}/versions/{v}/infer
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path[11:-6].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


def fast_routes(dp: DataPlane) -> Matcher:
    """The fast-path matcher for ``POST …/infer``."""

    def match(method: str, path: str) -> Handler | None:
        found = _match_infer(path) if method == "POST" else None
        if found is None:
            return None
        model, version = found

        def handle(headers: Headers, body: bytes, tenant_id: str) -> Awaitable[Result]:
            hlen = headers.get(b"inference-header-content-length")
            tmo = headers.get(b"x-request-timeout-ms")
            return infer(dp, tenant_id, model, version, body,
                         hlen.decode("latin-1") if hlen else None,
                         tmo.decode("latin-1") if tmo else None)  # fmt: skip

        return handle

    return match


def _active(dep: Deployed, version: str | None) -> Any:
    v = parse_version(version)
    r = dep.active
    if r is None:
        raise Unavailable(f"model {dep.name!r} is {dep.state}: {dep.reason or 'not loaded'}")
    if v is not None and v != r.version:
        raise NotFound(f"version {v} of {dep.name!r} is not loaded (serving version {r.version})")
    return r


def _tensors(specs: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "datatype": oip_codec.SIGNATURE_TYPES.get(s.dtype, s.dtype.upper()),
            "shape": s.shape,
        }
        for s in specs
    ]


# -- health and server metadata -----------------------------------------------
@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    """Ready when ``/readyz`` is: the database and the artifact store answer."""
    ok, checks = await ready_checks(request.app.state)
    if ok:
        return JSONResponse({"ready": True})
    why = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    return JSONResponse({"ready": False, "error": f"not ready: {why}"}, 503, {"Retry-After": "5"})


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {
        "name": "modelplane",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_repository"],
    }


# -- model metadata, readiness, config ------------------------------------------
@router.get("/v2/models/{model}")
@router.get("/v2/models/{model}/versions/{version}")
async def model_metadata(
    model: str, dp: Plane, t: Tenant, version: str | None = None
) -> dict[str, Any]:
    dep = dp.deployment(t, model)
    r = _active(dep, version)
    return {
        "name": dep.name,
        "versions": [str(r.version)],
        "platform": PLATFORMS.get(r.fmt, r.fmt),
        "inputs": _tensors(r.signature.inputs),
        "outputs": _tensors(r.signature.outputs),
    }


@router.get("/v2/models/{model}/ready")
@router.get("/v2/models/{model}/versions/{version}/ready")
async def model_ready(
    model: str, dp: Plane, t: Tenant, version: str | None = None
) -> dict[str, Any]:
    dep = dp.deployment(t, model)
    _active(dep, version)
    return {"name": dep.name, "ready": True}


@router.get("/v2/models/{model}/config")
@router.get("/v2/models/{model}/versions/{version}/config")
async def model_config(
    model: str, dp: Plane, t: Tenant, version: str | None = None
) -> dict[str, Any]:
    """Triton-style model configuration (dims exclude the batch dimension)."""
    dep = dp.deployment(t, model)
    r = _active(dep, version)
    batch = dep.config.max_batch_size

    def dims(specs: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "data_type": "TYPE_"
                + (
                    "STRING"
                    if s.dtype == "string"
                    else oip_codec.SIGNATURE_TYPES.get(s.dtype, "INVALID")
                ),
                "dims": s.shape[1:] if batch > 0 and s.shape else s.shape,
            }
            for s in specs
        ]

    return {
        "name": dep.name,
        "platform": PLATFORMS.get(r.fmt, r.fmt),
        "backend": r.fmt,
        "version_policy": {"specific": {"versions": [r.version]}},
        "max_batch_size": batch,
        "input": dims(r.signature.inputs),
        "output": dims(r.signature.outputs),
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(dep.config.max_batch_delay_ms * 1000)
        },
        "instance_group": [{"count": dep.config.instances, "kind": "KIND_CPU"}],
    }


# -- inference (documented here; served by the fast path) -----------------------
async def _infer_route(
    request: Request, dp: DataPlane, t: str, model: str, version: str | None
) -> Response:
    status, headers, body = await infer(
        dp,
        t,
        model,
        version,
        await request.body(),
        request.headers.get("inference-header-content-length"),
        request.headers.get("x-request-timeout-ms"),
    )
    return Response(body, status, {k.decode(): v.decode() for k, v in headers})


@router.post("/v2/models/{model}/infer")
async def model_infer(model: str, request: Request, dp: Plane, t: Tenant) -> Response:
    """Infer with JSON tensors, or binary tensors with ``Inference-Header-Content-Length``."""
    return await _infer_route(request, dp, t, model, None)


@router.post("/v2/models/{model}/versions/{version}/infer")
async def model_version_infer(
    model: str, version: str, request: Request, dp: Plane, t: Tenant
) -> Response:
    return await _infer_route(request, dp, t, model, version)


# -- repository extension -----------------------------------------------------------
@router.post("/v2/repository/index")
async def repository_index(dp: Plane, t: Tenant) -> list[dict[str, Any]]:
    out = []
    for d in dp.manager.list(t):
        entry: dict[str, Any] = {"name": d.name, "state": d.state.upper()}
        if d.version is not None:
            entry["version"] = str(d.version)
        if d.reason:
            entry["reason"] = d.reason
        out.append(entry)
    return out


@router.post("/v2/repository/models/{model}/load")
async def repository_load(model: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    """Load a deployment (a registry model of that name is deployed from ``latest``)."""
    await dp.manager.load(t, model)
    return {}


@router.post("/v2/repository/models/{model}/unload")
async def repository_unload(model: str, dp: Plane, t: Tenant) -> dict[str, Any]:
    await dp.manager.unload(t, model)
    return {}
