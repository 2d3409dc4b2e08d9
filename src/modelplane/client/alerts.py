"""SDK calls for alerts and alert rules (``Client`` delegates here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelplane.schemas.alerts import AlertList, AlertRule, AlertRuleList, AlertRuleSpec

if TYPE_CHECKING:
    from modelplane.client.http import Client


def _body(rule: AlertRuleSpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(rule, AlertRuleSpec):
        body: dict[str, Any] = rule.model_dump(mode="json", by_alias=True)
        return body
    return rule


def alerts(client: Client, state: str | None = None) -> AlertList:
    params = {"state": state} if state else {}
    return client._get(AlertList, "GET", "/alerts", params=params)


def list_rules(client: Client) -> list[AlertRule]:
    return client._get(AlertRuleList, "GET", "/alerts/rules").rules


def get_rule(client: Client, name: str) -> AlertRule:
    return client._get(AlertRule, "GET", f"/alerts/rules/{name}")


def create_rule(client: Client, rule: AlertRuleSpec | dict[str, Any]) -> AlertRule:
    return client._get(AlertRule, "POST", "/alerts/rules", json=_body(rule))


def replace_rule(client: Client, name: str, rule: AlertRuleSpec | dict[str, Any]) -> AlertRule:
    return client._get(AlertRule, "PUT", f"/alerts/rules/{name}", json=_body(rule))


def delete_rule(client: Client, name: str) -> None:
    client._call("DELETE", f"/alerts/rules/{name}")


def export_rules(client: Client) -> tuple[str, list[str]]:
    """(the Prometheus rules file, names of rules it leaves out)."""
    resp = client._call("GET", "/alerts/export")
    skipped = [s for s in resp.headers.get("x-skipped-rules", "").split(",") if s]
    return resp.text, skipped
