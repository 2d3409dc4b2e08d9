"""Alert rules and alerts, shared by the server, the SDK and the CLI.

A rule is a condition over the server's own metrics (``modelplane_*``), held
for ``for`` before it fires. The same rule is evaluated in process and can be
exported as a Prometheus alerting rule, so every field here has a PromQL
meaning (see ``monitoring/alerts/promql.py``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SEVERITIES = ("critical", "warning", "info")
KINDS = ("latency", "error_ratio", "queue_depth", "deployment_not_ready", "job_failed", "quota")
STATES = ("pending", "firing", "resolved")
MAX_WINDOW_SECONDS = 7 * 86400

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# Prometheus' duration syntax: units largest first, each at most once ("1h30m", "500ms").
_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,127}")
_RULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DEPLOYMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
# The template forms both our renderer and Prometheus' Go templates understand.
_TEMPLATE = re.compile(r"\{\{\s*(\$value|\$labels\.[a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
RESERVED_LABELS = frozenset({"alertname", "severity"})


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration (``30s``, ``5m``, ``1h30m``, ``500ms``)."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h30m or 500ms")
    units = ("w", "d", "h", "m", "s", "ms")
    return sum(int(v) * _UNITS[u] for u, v in zip(units, match.groups(), strict=True) if v)


def _window(text: str) -> str:
    seconds = duration_seconds(text)
    if not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"window {text!r} must be between 1s and 7d")
    return text


def _hold(text: str) -> str:
    if duration_seconds(text) > MAX_WINDOW_SECONDS:
        raise ValueError(f"'for' {text!r} must be at most 7d")
    return text


def _tenant(value: str | None) -> str | None:
    if value is not None and not _TENANT.fullmatch(value):
        raise ValueError(f"invalid tenant name {value!r}")
    return value


def _deployment(value: str | None) -> str | None:
    if value is not None and (not _DEPLOYMENT.fullmatch(value) or ".." in value):
        raise ValueError(f"invalid deployment name {value!r}")
    return value


def _labels(values: dict[str, str]) -> dict[str, str]:
    for key, value in values.items():
        if not _LABEL.fullmatch(key) or key.startswith("__"):
            raise ValueError(f"invalid label name {key!r}: use [a-zA-Z_][a-zA-Z0-9_]*, no '__'")
        if key in RESERVED_LABELS:
            raise ValueError(f"label {key!r} is set by the rule itself (name, severity)")
        if len(value) > 1024:
            raise ValueError(f"label {key!r}: value longer than 1024 characters")
    return values


def _annotations(values: dict[str, str]) -> dict[str, str]:
    for key, value in values.items():
        if not _LABEL.fullmatch(key) or key.startswith("__"):
            raise ValueError(f"invalid annotation name {key!r}: use [a-zA-Z_][a-zA-Z0-9_]*")
        if len(value) > 4096:
            raise ValueError(f"annotation {key!r}: longer than 4096 characters")
        if "{{" in _TEMPLATE.sub("", value) or "}}" in _TEMPLATE.sub("", value):
            raise ValueError(
                f"annotation {key!r}: only {{{{ $value }}}} and {{{{ $labels.NAME }}}} templates"
                " are supported"
            )
    return values


def render(template: str, labels: dict[str, str], value: float) -> str:
    """Fill ``{{ $value }}`` and ``{{ $labels.NAME }}`` (as Prometheus would)."""

    def fill(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref == "$value":
            return f"{value:g}"
        return labels.get(ref.removeprefix("$labels."), "")

    return _TEMPLATE.sub(fill, template)


Window = Annotated[str, AfterValidator(_window)]
Hold = Annotated[str, AfterValidator(_hold)]


class _Strict(BaseModel):
    # NaN and infinities are no thresholds (and JSON columns cannot hold them).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Latency(_Strict):
    """The ``quantile`` of request latency over ``window`` is above ``above_ms``."""

    kind: Literal["latency"]
    quantile: float = Field(default=0.99, gt=0, lt=1)
    above_ms: float = Field(gt=0, le=3_600_000)
    window: Window = "5m"


class ErrorRatio(_Strict):
    """The share of requests answered with a 5xx status over ``window`` is above ``above``."""

    kind: Literal["error_ratio"]
    above: float = Field(ge=0, lt=1)
    window: Window = "5m"


class QueueDepth(_Strict):
    """Requests waiting in a deployment's batcher are more than ``above``."""

    kind: Literal["queue_depth"]
    above: float = Field(ge=0)


class NotReady(_Strict):
    """A deployment does not serve (loading, failed, or its worker died)."""

    kind: Literal["deployment_not_ready"]


class JobFailed(_Strict):
    """At least one job (of ``job_kind``, if given) failed within ``window``."""

    kind: Literal["job_failed"]
    job_kind: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    window: Window = "15m"


class Quota(_Strict):
    """A tenant uses more than ``above_percent`` of its quota of ``resource``.

    ``requests_per_second`` is the request rate over ``window``; ``stored_bytes``
    is what the tenant stores now. Tenants without that quota never match.
    """

    kind: Literal["quota"]
    resource: Literal["requests_per_second", "stored_bytes"]
    above_percent: float = Field(gt=0, le=1000)
    window: Window = "5m"


Condition = Annotated[
    Latency | ErrorRatio | QueueDepth | NotReady | JobFailed | Quota, Field(discriminator="kind")
]


class Selector(_Strict):
    """Only series of this tenant and/or deployment (exact names)."""

    tenant: Annotated[str | None, AfterValidator(_tenant)] = None
    deployment: Annotated[str | None, AfterValidator(_deployment)] = None


class AlertRuleSpec(_Strict):
    """A rule as written in the rules file or sent to ``POST /api/v1/alerts/rules``."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, populate_by_name=True, serialize_by_alias=True
    )
    name: str = Field(description="Becomes the alert's 'alertname' (CamelCase, like HighLatency).")
    condition: Condition
    for_: Hold = Field(default="0s", alias="for", description="How long it must hold to fire.")
    severity: Literal["critical", "warning", "info"] = "warning"
    selector: Selector = Field(default_factory=Selector)
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(_annotations)] = Field(
        default_factory=dict, description="summary, description, …; may use {{ $labels.x }}."
    )

    @model_validator(mode="after")
    def _check(self) -> AlertRuleSpec:
        if not _RULE.fullmatch(self.name):
            raise ValueError(
                f"invalid rule name {self.name!r}: use 1-128 ASCII letters, digits or '_',"
                " not starting with a digit"
            )
        kind = self.condition.kind
        if kind == "job_failed" and (self.selector.tenant or self.selector.deployment):
            raise ValueError("job_failed rules take no tenant or deployment selector")
        if kind == "quota" and self.selector.deployment:
            raise ValueError("quota rules are per tenant: no deployment selector")
        return self

    @property
    def for_seconds(self) -> float:
        return duration_seconds(self.for_)


class AlertRule(AlertRuleSpec):
    """A rule as the API lists it: where it comes from, and who made it when."""

    source: Literal["file", "api"]
    created_by: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AlertRuleList(BaseModel):
    rules: list[AlertRule]


class Alert(BaseModel):
    """One series of one rule that is pending, firing or recently resolved."""

    rule: str
    state: Literal["pending", "firing", "resolved"]
    severity: str
    value: float = Field(description="The condition's value at the last evaluation it held.")
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    since: datetime = Field(description="When it entered its current state.")
    active_at: datetime = Field(description="When the condition first held (pending).")
    fired_at: datetime | None = None
    resolved_at: datetime | None = None


class AlertList(BaseModel):
    alerts: list[Alert]
    evaluated_at: datetime | None = Field(description="The last evaluation (null: none yet).")
