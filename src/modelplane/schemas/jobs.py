"""Job records shared by the server, the SDK and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")


class Job(BaseModel):
    id: str
    kind: str
    name: str
    state: str
    progress: float
    message: str
    metrics: list[dict[str, Any]]
    result: dict[str, Any]
    error: str
    attempts: int
    spec: dict[str, Any]
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class LogLine(BaseModel):
    seq: int
    at: datetime
    line: str
