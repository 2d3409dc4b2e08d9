"""SDK calls for metered usage and cost (``Client.usage`` and ``usage_csv`` delegate here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from modelplane.schemas.usage import UsageReport

if TYPE_CHECKING:
    from modelplane.client.http import Client


def _params(
    tenant: str | None, start: date | str | None, end: date | str | None,
    group_by: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    params: dict[str, Any] = {"group_by": ",".join(group_by)}
    if tenant:
        params["tenant"] = tenant
    if start:
        params["from"] = str(start)
    if end:
        params["to"] = str(end)
    return params


def usage(
    client: Client, tenant: str | None = None, start: date | str | None = None,
    end: date | str | None = None, group_by: Sequence[str] = ("tenant",),
) -> UsageReport:  # fmt: skip
    return client._get(UsageReport, "GET", "/usage", params=_params(tenant, start, end, group_by))


def usage_csv(
    client: Client, tenant: str | None = None, start: date | str | None = None,
    end: date | str | None = None, group_by: Sequence[str] = ("tenant",),
) -> str:  # fmt: skip
    params = {**_params(tenant, start, end, group_by), "format": "csv"}
    return client._call("GET", "/usage", params=params).text
