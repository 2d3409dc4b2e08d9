"""``/healthz`` (the process answers), ``/readyz`` (it can serve: database and artifact store
reachable) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from modelplane import __version__
from modelplane.monitoring.health import readiness
from modelplane.monitoring.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["health"])
READY_TIMEOUT_SECONDS = 5.0


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


async def ready_checks(state: Any) -> tuple[bool, dict[str, str]]:
    """(ready, checks): shared by ``/readyz`` and OIP's ``/v2/health/ready``."""
    try:
        checks = await asyncio.wait_for(
            asyncio.to_thread(readiness, state.engine, state.registry.blobs),
            READY_TIMEOUT_SECONDS,
        )
    except TimeoutError:
        checks = {"database": f"no answer within {READY_TIMEOUT_SECONDS:.0f} s"}
    return all(v == "ok" for v in checks.values()), checks


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    ready, checks = await ready_checks(request.app.state)
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {"error": "not ready: " + "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"),
         "status": "not ready", "checks": checks},
        status_code=503, headers={"Retry-After": "5"},
    )  # fmt: skip


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    body = await asyncio.to_thread(m.render)  # refreshers may query the database
    return Response(body, media_type=CONTENT_TYPE)
