"""``GET /api/v1/usage``: metered use and cost per tenant, deployment and day (JSON or CSV).

A non-admin caller sees only its own tenant; an admin sees every tenant, or one by
``tenant=``. Counts still in memory are flushed first, so the answer is current for
this server process.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from modelplane.api.deps import tenant as caller_tenant
from modelplane.errors import Forbidden, InvalidInput
from modelplane.monitoring.usage import UsageMeter
from modelplane.monitoring.usage_store import Prices
from modelplane.schemas.usage import CSV_FIELDS, GROUPS, UsageLine, UsageReport
from modelplane.schemas.usage import Prices as PricesOut

router = APIRouter(prefix="/api/v1", tags=["usage"])
DEFAULT_DAYS = 30
MAX_DAYS = 3660


def _groups(values: list[str]) -> list[str]:
    groups: list[str] = []
    for value in values:
        for g in value.split(","):
            g = g.strip()
            if not g:
                continue
            if g not in GROUPS:
                raise InvalidInput(f"group_by {g!r}: choose from {', '.join(GROUPS)}")
            if g not in groups:
                groups.append(g)
    return groups


@router.get("/usage", response_model=UsageReport, response_model_exclude_none=True)
async def usage(
    request: Request,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
    start: Annotated[date | None, Query(alias="from", description="First day (UTC)")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last day, included")] = None,
    group_by: Annotated[
        list[str], Query(description="tenant, deployment, day; comma-separated or repeated")
    ] = ["tenant"],  # noqa: B006 - FastAPI copies query defaults
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> Response | UsageReport:
    own = caller_tenant(request)
    role = getattr(request.state, "role", "admin")  # auth off: everything is allowed
    if role != "admin":
        if tenant is not None and tenant != own:
            raise Forbidden("only an admin may read another tenant's usage")
        tenant = own
    groups = _groups(group_by)
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput(f"from ({start}) is after to ({end})")
    if (end - start).days > MAX_DAYS:
        raise InvalidInput(f"at most {MAX_DAYS} days per report")
    settings = request.app.state.settings
    meter: UsageMeter = request.app.state.usage
    prices = Prices(
        settings.price_per_1k_requests, settings.price_per_compute_second,
        settings.price_per_gb_month,
    )  # fmt: skip

    def build() -> list[dict[str, object]]:
        meter.flush()
        meter.sample_storage()
        return meter.store.report(tenant, start, end, groups, prices)

    rows = await asyncio.to_thread(build)
    lines = [UsageLine.model_validate(r) for r in rows]
    accept = request.headers.get("accept", "")
    if format == "csv" or (format is None and "text/csv" in accept):
        return Response(_csv(lines, groups), media_type="text/csv; charset=utf-8")
    return UsageReport(
        start=start, end=end, group_by=groups,
        prices=PricesOut(
            per_1k_requests=prices.per_1k_requests,
            per_compute_second=prices.per_compute_second, per_gb_month=prices.per_gb_month,
        ),
        rows=lines, total_cost=round(sum(line.cost for line in lines), 6),
    )  # fmt: skip


def _csv(lines: list[UsageLine], groups: list[str]) -> str:
    fields = [f for f in CSV_FIELDS if f in groups or f not in GROUPS]
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for line in lines:
        writer.writerow(line.model_dump(mode="json"))
    return out.getvalue()
