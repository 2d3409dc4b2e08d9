"""Deployment records shared by the server, the SDK and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DeploymentConfig(BaseModel):
    """How a deployment batches and scales; every field can be changed later."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        default=8, ge=1, le=4096,
        description="Most rows per batch; for text generation, concurrent sequences per instance.",
    )  # fmt: skip
    max_cached_tokens: int = Field(
        default=32_768, ge=16, le=1 << 24,
        description="Text generation: KV-cache budget per instance, in tokens.",
    )  # fmt: skip
    max_batch_delay_ms: float = Field(default=2.0, ge=0, le=10_000)
    max_queue: int = Field(default=256, ge=1, le=1_000_000)
    timeout_ms: int = Field(default=30_000, ge=1, le=3_600_000)
    instances: int = Field(default=1, ge=1, le=64)
    threads: int | None = Field(default=None, ge=1, le=256, description="Runtime threads/instance.")


class DeploymentCreate(DeploymentConfig):
    name: str
    model: str = Field(description='"name", "name@3" or "name@alias"')


class DeploymentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_cached_tokens: int | None = Field(default=None, ge=16, le=1 << 24)
    max_batch_delay_ms: float | None = Field(default=None, ge=0, le=10_000)
    max_queue: int | None = Field(default=None, ge=1, le=1_000_000)
    timeout_ms: int | None = Field(default=None, ge=1, le=3_600_000)
    instances: int | None = Field(default=None, ge=1, le=64)
    threads: int | None = Field(default=None, ge=1, le=256)


class WorkerStatus(BaseModel):
    pid: int | None
    alive: bool


class Deployment(DeploymentConfig):
    name: str
    model: str
    state: str  # loading | ready | failed
    reason: str | None = None
    version: int | None = None  # the version being served
    format: str | None = None
    signature: dict[str, Any] | None = None
    workers: list[WorkerStatus] = Field(default_factory=list)
    restarts: int = 0
    batches: int = 0
    batched_items: int = 0
    # Text generation (None / 0 for other models): the worker's limits and live counts.
    generation: dict[str, Any] | None = None
    active_sequences: int = 0
    queued_sequences: int = 0
    sequences_total: int = 0
    created_at: datetime
    updated_at: datetime
