"""Job routes under /api/v1/jobs: submit, list, show, logs (optionally followed), cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from modelplane.api.deps import actor, tenant
from modelplane.api.downloads import blob_response
from modelplane.errors import NotFound
from modelplane.jobs.service import JobService
from modelplane.schemas.jobs import FINAL, STATES, Job, LogLine

router = APIRouter(prefix="/api/v1", tags=["jobs"])
Tenant = Annotated[str, Depends(tenant)]
Actor = Annotated[str, Depends(actor)]


def jobs(request: Request) -> JobService:
    svc: JobService = request.app.state.jobs
    return svc


Jobs = Annotated[JobService, Depends(jobs)]


class JobPage(BaseModel):
    jobs: list[Job]
    next_page_token: str | None


class LogPage(BaseModel):
    lines: list[LogLine]


@router.post("/jobs", status_code=201)
def submit_job(
    svc: Jobs,
    t: Tenant,
    who: Actor,
    body: Annotated[dict[str, Any], Body(examples=[{"kind": "train", "dataset": "iris"}])],
) -> Job:
    """Queue a job. The spec is checked now: what can be refused up front is (404/422)."""
    return svc.submit(t, who, body)


@router.get("/jobs")
def list_jobs(
    svc: Jobs,
    t: Tenant,
    state: Annotated[str | None, Query(pattern="^(" + "|".join(STATES) + ")$")] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    items, token = svc.store.list_jobs(
        t, state=state, kind=kind, limit=limit, page_token=page_token
    )
    return JobPage(jobs=items, next_page_token=token)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, svc: Jobs, t: Tenant) -> Job:
    return svc.store.get(t, job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, svc: Jobs, t: Tenant) -> Job:
    """Cancel: a queued job at once, a running one within a few seconds."""
    return svc.store.request_cancel(t, job_id)


@router.get("/jobs/{job_id}/output", response_model=None)
def job_output(job_id: str, request: Request, svc: Jobs, t: Tenant) -> Response:
    """The file a finished job produced (batch predictions), ``ETag`` = sha256."""
    job = svc.store.get(t, job_id)
    output = job.result.get("output")
    if not isinstance(output, dict) or "sha256" not in output:
        raise NotFound(f"job {job_id} has no output ({job.state})")
    media = (
        "application/x-ndjson" if output.get("format") == "jsonl" else "application/octet-stream"
    )
    name = f"job-{job_id}.{output.get('format', 'bin')}"
    return blob_response(
        request, svc.registry.blobs, str(output["sha256"]), filename=name, media_type=media
    )


@router.get("/jobs/{job_id}/logs", response_model=None)
async def job_logs(
    job_id: str,
    svc: Jobs,
    t: Tenant,
    after: Annotated[int, Query(ge=0)] = 0,
    follow: bool = False,
) -> LogPage | StreamingResponse:
    """Log lines after ``after``; with ``follow=true``, a text stream until the job ends."""
    lines = await asyncio.to_thread(svc.store.logs, t, job_id, after)
    if not follow:
        return LogPage(lines=lines)

    async def stream() -> AsyncIterator[bytes]:
        seq = after
        batch = lines
        idle_after_end = 0
        for _ in range(int(24 * 3600 / 0.5)):  # a follow ends within a day at most
            for line in batch:
                seq = line.seq
                yield f"{line.at:%Y-%m-%dT%H:%M:%S} {line.line}\n".encode()
            job = await asyncio.to_thread(svc.store.get, t, job_id)
            if job.state in FINAL:
                idle_after_end += 1
                if idle_after_end > 1:
                    return
            await asyncio.sleep(0.5)
            batch = await asyncio.to_thread(svc.store.logs, t, job_id, seq)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")
