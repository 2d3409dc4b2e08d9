"""Gauges read from state at scrape time: deployments ready, jobs per kind and state."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from modelplane.jobs.tables import JobRow
from modelplane.monitoring.metrics import Metrics


def install(metrics: Metrics, deployments: dict[tuple[str, str], Any], engine: Engine) -> None:
    """Register the refreshers that keep ``deployment_ready`` and ``jobs`` current.

    ``deployments`` is the model manager's live map of ``Deployed`` (``.state``)."""
    seen_deployments: set[tuple[str, str]] = set()
    seen_jobs: set[tuple[str, str]] = set()
    read = sessionmaker(engine)

    def deployments_ready() -> None:
        current: dict[tuple[str, str], float] = {}
        # The event loop may change the map meanwhile: a copy that fails is retried.
        for _ in range(3):
            with contextlib.suppress(RuntimeError):
                current = {k: 1.0 if d.state == "ready" else 0.0 for k, d in deployments.items()}
                break
        for key in seen_deployments - current.keys():  # deleted: drop the series
            with contextlib.suppress(KeyError):
                metrics.deployment_ready.remove(*key)
        for key, value in current.items():
            metrics.deployment(*key).ready.set(value)
        seen_deployments.clear()
        seen_deployments.update(current)

    def jobs() -> None:
        q = select(JobRow.kind, JobRow.state, func.count(JobRow.id)).group_by(
            JobRow.kind, JobRow.state
        )
        with read() as s:
            counts = {(kind, state): n for kind, state, n in s.execute(q)}
        for key in seen_jobs - counts.keys():
            metrics.jobs.labels(*key).set(0)
        for key, n in counts.items():
            metrics.jobs.labels(*key).set(n)
        seen_jobs.update(counts)

    metrics.refreshers.extend([deployments_ready, jobs])
