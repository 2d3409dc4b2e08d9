"""Alert routes under /api/v1/alerts: the alerts, the rules (CRUD) and the Prometheus export.

Who may do what (``auth.roles``: every write under /api/v1/alerts needs admin):

- admins read and write every rule and see every alert;
- other roles (viewer and up) read only what concerns their own tenant: rules
  whose selector names their tenant, and alerts whose ``tenant`` label is
  theirs, so no other tenant's names leak. With auth off everyone is admin.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse

from modelplane.api.deps import actor, tenant
from modelplane.errors import NotFound
from modelplane.monitoring.alerts import Evaluator, RuleBook
from modelplane.monitoring.alerts.promql import export
from modelplane.monitoring.alerts.wiring import all_quotas
from modelplane.schemas.alerts import AlertList, AlertRule, AlertRuleList, AlertRuleSpec

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
State = Annotated[str | None, Query(pattern="^(pending|firing|resolved)$")]
YAML = "application/yaml"


def evaluator(request: Request) -> Evaluator:
    ev: Evaluator = request.app.state.alerts
    return ev


Alerts = Annotated[Evaluator, Depends(evaluator)]


class Viewer:
    """The caller's reach: everything for admins (and with auth off), else its tenant."""

    def __init__(self, request: Request) -> None:
        self.tenant = tenant(request)
        self.admin = getattr(request.state, "role", None) in (None, "admin")

    def rule(self, rule: AlertRule) -> bool:
        return self.admin or rule.selector.tenant == self.tenant

    def labels(self, labels: dict[str, str]) -> bool:
        return self.admin or labels.get("tenant") == self.tenant


Caller = Annotated[Viewer, Depends(Viewer)]


def _book(ev: Evaluator) -> RuleBook:
    return ev.rules


@router.get("")
def list_alerts(ev: Alerts, who: Caller, state: State = None) -> AlertList:
    """Pending and firing alerts, then those resolved within the retention time."""
    listed = ev.alerts(who.labels)
    if state is not None:
        listed.alerts = [a for a in listed.alerts if a.state == state]
    return listed


@router.get("/rules")
def list_rules(ev: Alerts, who: Caller) -> AlertRuleList:
    return AlertRuleList(rules=[r for r in _book(ev).all() if who.rule(r)])


@router.post("/rules", status_code=201)
def create_rule(body: AlertRuleSpec, ev: Alerts, request: Request) -> AlertRule:
    return _book(ev).create(body, actor(request))


@router.get("/rules/{name}")
def get_rule(name: str, ev: Alerts, who: Caller) -> AlertRule:
    rule = _book(ev).get(name)
    if not who.rule(rule):
        raise NotFound(f"alert rule {name!r} not found")
    return rule


@router.put("/rules/{name}")
def replace_rule(name: str, body: AlertRuleSpec, ev: Alerts) -> AlertRule:
    """Replace an API rule (file rules are read-only: 409). Its alerts keep their state."""
    return _book(ev).replace(name, body)


@router.delete("/rules/{name}", status_code=204)
def delete_rule(name: str, ev: Alerts) -> Response:
    """Delete an API rule; its firing alerts resolve at the next evaluation."""
    _book(ev).delete(name)
    return Response(status_code=204)


@router.get("/export", response_class=PlainTextResponse)
async def export_rules(ev: Alerts, who: Caller, request: Request) -> PlainTextResponse:
    """The rules as a Prometheus alerting-rules file (YAML); header ``X-Skipped-Rules``
    names those with no PromQL form."""

    def render() -> tuple[str, list[str]]:
        rules = [r for r in _book(ev).all() if who.rule(r)]
        return export(rules, all_quotas(request.app.state.auth))

    text, skipped = await asyncio.to_thread(render)
    headers = {"X-Skipped-Rules": ",".join(skipped)} if skipped else {}
    return PlainTextResponse(text, media_type=YAML, headers=headers)
