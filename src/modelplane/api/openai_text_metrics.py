"""What the text-generation front end records: tokens (metrics and usage), time to first token,
and the ``modelplane_active_sequences`` gauge (read from the deployments at scrape time).

Tokens and first-token times are labelled with the caller's tenant and the deployment name
it used (as requests are); the gauge with the deployment's owner and name.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from modelplane.monitoring.metrics import Metrics
from modelplane.monitoring.usage import UsageMeter


class Observation:
    """One completions/chat request, from its arrival."""

    __slots__ = ("_deployment", "_first", "_metrics", "_started", "_tenant", "_usage")

    def __init__(
        self, metrics: Metrics | None, usage: UsageMeter | None, tenant: str, deployment: str
    ) -> None:
        self._metrics, self._usage = metrics, usage
        self._tenant, self._deployment = tenant, deployment
        self._started = time.perf_counter()
        self._first = False

    def first_token(self) -> None:
        if self._first:
            return
        self._first = True
        if self._metrics is not None:
            seconds = time.perf_counter() - self._started
            self._metrics.time_to_first_token.labels(self._tenant, self._deployment).observe(
                seconds
            )

    def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        if self._usage is not None:
            self._usage.record_tokens(
                self._tenant, self._deployment, prompt_tokens, completion_tokens
            )
        if self._metrics is not None:
            key = (self._tenant, self._deployment)
            self._metrics.prompt_tokens.labels(*key).inc(prompt_tokens)
            self._metrics.generated_tokens.labels(*key).inc(completion_tokens)


class TextMetrics:
    def __init__(self, metrics: Metrics | None = None, usage: UsageMeter | None = None) -> None:
        self.metrics = metrics if metrics is not None and metrics.enabled else None
        self.usage = usage if usage is not None and usage.enabled else None

    def start(self, tenant: str, deployment: str) -> Observation:
        return Observation(self.metrics, self.usage, tenant, deployment)

    def install_gauge(self, deployments: dict[tuple[str, str], Any]) -> None:
        """Keep ``active_sequences`` current from the manager's map of ``Deployed``."""
        metrics = self.metrics
        if metrics is None:
            return
        seen: set[tuple[str, str]] = set()

        def active_sequences() -> None:
            current: dict[tuple[str, str], int] = {}
            for _ in range(3):  # the event loop may change the map meanwhile: retry the copy
                with contextlib.suppress(RuntimeError):
                    current = {
                        k: d.active.streams.active
                        for k, d in list(deployments.items())
                        if d.active is not None and d.active.streams is not None
                    }
                    break
            for key in seen - current.keys():
                with contextlib.suppress(KeyError):
                    metrics.active_sequences.remove(*key)
            for key, n in current.items():
                metrics.active_sequences.labels(*key).set(n)
            seen.clear()
            seen.update(current)

        metrics.refreshers.append(active_sequences)
