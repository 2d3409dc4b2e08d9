"""Where rules come from: the rules file (read-only) and the SQL table the API writes.

The rules file (``MODELPLANE_ALERT_RULES_FILE``) is YAML::

    rules:
      - name: HighLatency
        condition: {kind: latency, quantile: 0.99, above_ms: 250, window: 5m}
        for: 2m
        severity: warning
        selector: {deployment: double}
        annotations: {summary: "p99 of {{ $labels.deployment }} is {{ $value }} ms"}

It is read once, when the server starts; a broken file stops the start with
a message naming the rule and field. Names are unique across both sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from modelplane.db import utcnow, writer
from modelplane.errors import Conflict, InvalidInput, NotFound
from modelplane.monitoring.alerts.tables import AlertRuleRow
from modelplane.schemas.alerts import AlertRule, AlertRuleSpec


def describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_rules(data: Any, origin: str) -> list[AlertRuleSpec]:
    """Rules from parsed YAML ``{"rules": [...]}``; ``InvalidInput`` names what is wrong."""
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
        raise InvalidInput(f"{origin}: expected a mapping with a 'rules' list")
    if extra := set(data) - {"rules"}:
        raise InvalidInput(f"{origin}: unknown top-level keys {sorted(extra)}")
    rules: list[AlertRuleSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(data.get("rules") or []):
        name = item.get("name", f"#{i + 1}") if isinstance(item, dict) else f"#{i + 1}"
        try:
            rule = AlertRuleSpec.model_validate(item)
        except ValidationError as exc:
            raise InvalidInput(f"{origin}: rule {name}: {describe(exc)}") from None
        if rule.name in seen:
            raise InvalidInput(f"{origin}: rule {rule.name!r} appears twice")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def load_file(path: Path) -> list[AlertRuleSpec]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"alert rules file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"alert rules file {path} is not valid YAML: {exc}") from None
    return parse_rules(data, f"alert rules file {path}")


def _rule(row: AlertRuleRow) -> AlertRule:
    return AlertRule.model_validate(
        {**row.spec, "source": "api", "created_by": row.created_by,
         "created_at": row.created_at, "updated_at": row.updated_at}
    )  # fmt: skip


def _spec(rule: AlertRuleSpec) -> dict[str, Any]:
    spec: dict[str, Any] = rule.model_dump(mode="json", by_alias=True)
    return spec


class RuleBook:
    """File rules (fixed) and API rules (in SQL), as one list."""

    def __init__(self, engine: Engine, file_rules: list[AlertRuleSpec] | None = None) -> None:
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)
        self.file_rules = {
            r.name: AlertRule.model_validate({**_spec(r), "source": "file"})
            for r in file_rules or []
        }

    def all(self) -> list[AlertRule]:
        """File rules first, then API rules, each by name."""
        with self._read() as s:
            rows = list(s.scalars(select(AlertRuleRow).order_by(AlertRuleRow.name)))
        api = [_rule(r) for r in rows if r.name not in self.file_rules]
        return sorted(self.file_rules.values(), key=lambda r: r.name) + api

    def get(self, name: str) -> AlertRule:
        if name in self.file_rules:
            return self.file_rules[name]
        with self._read() as s:
            row = s.get(AlertRuleRow, name)
            if row is None:
                raise NotFound(f"alert rule {name!r} not found")
            return _rule(row)

    def _writable(self, name: str) -> None:
        if name in self.file_rules:
            raise Conflict(
                f"alert rule {name!r} comes from the rules file: change it there and restart"
            )

    def create(self, rule: AlertRuleSpec, actor: str) -> AlertRule:
        self._writable(rule.name)
        with self._write() as s, s.begin():
            if s.get(AlertRuleRow, rule.name) is not None:
                raise Conflict(f"alert rule {rule.name!r} already exists")
            now = utcnow()
            row = AlertRuleRow(
                name=rule.name, spec=_spec(rule), created_by=actor, created_at=now, updated_at=now
            )
            s.add(row)
            s.flush()
            return _rule(row)

    def replace(self, name: str, rule: AlertRuleSpec) -> AlertRule:
        self._writable(name)
        if rule.name != name:
            raise InvalidInput(f"the body names rule {rule.name!r}, the path {name!r}")
        with self._write() as s, s.begin():
            row = s.get(AlertRuleRow, name)
            if row is None:
                raise NotFound(f"alert rule {name!r} not found")
            row.spec, row.updated_at = _spec(rule), utcnow()
            s.flush()
            return _rule(row)

    def delete(self, name: str) -> None:
        self._writable(name)
        with self._write() as s, s.begin():
            row = s.get(AlertRuleRow, name)
            if row is None:
                raise NotFound(f"alert rule {name!r} not found")
            s.delete(row)
