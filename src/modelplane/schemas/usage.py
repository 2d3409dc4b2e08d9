"""Usage report shapes, shared by the API, the SDK and the CLI."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel

GROUPS = ("tenant", "deployment", "day")


class Prices(BaseModel):
    per_1k_requests: float
    per_compute_second: float
    per_gb_month: float


class UsageLine(BaseModel):
    """One group's totals; the grouping fields are set only when grouped by them.

    Job CPU time and storage belong to no deployment: grouped by deployment they show
    on a line whose ``deployment`` is ``""``."""

    tenant: str | None = None
    deployment: str | None = None
    day: date | None = None
    requests: int = 0
    items: int = 0
    compute_seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    jobs: int = 0
    job_cpu_seconds: float = 0.0
    job_wall_seconds: float = 0.0
    stored_gb_months: float = 0.0
    cost: float = 0.0


class UsageReport(BaseModel):
    start: date
    end: date
    group_by: list[str]
    prices: Prices
    rows: list[UsageLine]
    total_cost: float


CSV_FIELDS = [*GROUPS, *(f for f in UsageLine.model_fields if f not in GROUPS)]
