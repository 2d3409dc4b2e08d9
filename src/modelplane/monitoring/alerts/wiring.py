"""Builds the evaluator a server runs from its settings, metrics and auth services."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from itertools import chain
from urllib.parse import urlsplit

from sqlalchemy import Engine

from modelplane.auth import Auth
from modelplane.monitoring.alerts.conditions import SAMPLED, Quotas, compact
from modelplane.monitoring.alerts.evaluator import Evaluator, QuotaSource
from modelplane.monitoring.alerts.notify import LogNotifier, Notifier, WebhookNotifier
from modelplane.monitoring.alerts.rules import RuleBook, load_file
from modelplane.monitoring.alerts.window import Labels, Snapshot, snapshot
from modelplane.monitoring.metrics import Metrics
from modelplane.monitoring.usage_store import UsageStore
from modelplane.settings import Settings

MAX_INTERNED = 200_000


def sampler(metrics: Metrics) -> Callable[[], Snapshot]:
    """Reads only the metrics rules use, straight from their objects (no text round trip)."""
    collectors = (metrics.requests, metrics.request_duration, metrics.queue_depth,
                  metrics.deployment_ready, metrics.job_transitions,
                  metrics.tenant_stored_bytes)  # fmt: skip

    # Snapshots share their label tuples: the history holds many copies of the same series.
    interned: dict[Labels, Labels] = {}

    def sample() -> Snapshot:
        metrics.refresh()  # readiness, job and storage gauges are read from state, as for a scrape
        snap = compact(snapshot(chain.from_iterable(c.collect() for c in collectors), SAMPLED))
        if len(interned) > MAX_INTERNED:
            interned.clear()
        return {
            name: {interned.setdefault(k, k): v for k, v in series.items()}
            for name, series in snap.items()
        }

    return sample


def all_tenants(auth: Auth) -> list[str]:
    names: list[str] = []
    token: str | None = None
    while True:
        page, token = auth.tenants.list(1000, token)
        names += [t.name for t in page]
        if token is None:
            return names


def quotas_of(auth: Auth, tenants: Iterable[str]) -> Quotas:
    """Effective request-rate and storage quotas (from the auth layer's cached book)."""
    limits = {t: auth.quotas.limits(t) for t in tenants}
    return Quotas(
        requests_per_second={t: lim.requests_per_second for t, lim in limits.items()},
        max_stored_bytes={t: lim.max_stored_bytes for t, lim in limits.items()},
    )


def all_quotas(auth: Auth) -> Quotas:
    """Every tenant's quotas (for the Prometheus export)."""
    return quotas_of(auth, all_tenants(auth))


def quota_source(auth: Auth) -> QuotaSource:
    return lambda tenants: quotas_of(auth, tenants)


def install_stored_bytes(metrics: Metrics, engine: Engine, every: float) -> None:
    """Keep ``modelplane_tenant_stored_bytes`` current: two grouped queries, at most once
    per ``every`` seconds (stored bytes change slowly; scrapes and evaluations both ask)."""
    store = UsageStore(engine)
    last = [-math.inf]
    seen: set[str] = set()

    def refresh() -> None:
        now = time.monotonic()
        if now - last[0] < every:
            return
        last[0] = now
        sizes = store.stored_bytes()
        for tenant in seen - sizes.keys():  # deleted everything: 0, not a stale value
            metrics.tenant_stored_bytes.labels(tenant).set(0)
        for tenant, size in sizes.items():
            metrics.tenant_stored_bytes.labels(tenant).set(size)
        seen.update(sizes)

    metrics.refreshers.append(refresh)


def check_urls(urls: list[str]) -> list[str]:
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"MODELPLANE_ALERT_WEBHOOK_URLS: {url!r} is not an http(s) URL")
    return urls


def build(settings: Settings, engine: Engine, metrics: Metrics, auth: Auth) -> Evaluator:
    """The rule book (file + SQL) and an evaluator over this app's metrics; not started."""
    file_rules = load_file(settings.alert_rules_file) if settings.alert_rules_file else []
    install_stored_bytes(metrics, engine, min(30.0, settings.alert_interval_seconds))
    notifiers: list[Notifier] = [LogNotifier()]
    if urls := check_urls(settings.webhook_urls()):
        notifiers.append(
            WebhookNotifier(
                urls,
                attempts=settings.alert_webhook_attempts,
                backoff=settings.alert_webhook_backoff_seconds,
                timeout=settings.alert_webhook_timeout_seconds,
            )
        )
    return Evaluator(
        RuleBook(engine, file_rules),
        sampler(metrics),
        notifiers,
        interval=settings.alert_interval_seconds,
        quotas=quota_source(auth),
        external_url=settings.resolved_external_url(),
        resolved_retention=settings.alert_resolved_retention_seconds,
        max_samples=settings.alert_max_samples,
    )
