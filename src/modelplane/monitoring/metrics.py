"""Every Prometheus metric of modelplane, defined once, owned per app.

There is no module-level registry: ``create_app`` builds one ``Metrics``
(``Metrics(enabled=settings.metrics)``) and passes it down; routes and tools
reach it as ``app.state.metrics`` (the FastAPI app's state; the gate and the
fast path expose the same ``.state``). Each instance owns its own
``CollectorRegistry``, so several apps in one process (tests) never share a
counter. ``render()`` gives the Prometheus text exposition for ``/metrics``.

Processes: the server is one process; model worker processes time the model
call themselves and send the seconds back in the predict reply, where the
batcher records them, so every sample lives in this one registry (no
multiprocess mode). When several ``modelplane serve`` processes share one
database each exposes its own ``/metrics``; Prometheus scrapes each and
``sum by (...)`` adds them up.

Hot path: call ``request(protocol, tenant, deployment, version, status)`` for
the (counter, histogram) children of one label set; they are cached per label
tuple, so a request costs one dict lookup, one ``inc`` and one ``observe``.
``deployment(tenant, name)`` returns a ``DeploymentMetrics`` bundle of the
per-deployment children (queue, batch, readiness) for the batcher and manager.
When ``enabled`` is false, callers skip recording (``/metrics`` then shows only
process metrics and whatever was set outside the hot path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from modelplane.monitoring.fast import (
    CounterChild,
    FastCounter,
    FastGauge,
    FastHistogram,
    GaugeChild,
    HistogramChild,
)

log = logging.getLogger("modelplane.metrics")
CONTENT_TYPE = CONTENT_TYPE_LATEST
PROTOCOLS = ("oip", "tfserving", "openai", "management")

# Latency buckets from 0.5 ms to 60 s: small models answer in about a millisecond.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_REQ = ("protocol", "tenant", "deployment", "version", "status")
_DEP = ("tenant", "deployment")


@dataclass(slots=True)
class DeploymentMetrics:
    """Pre-resolved children for one deployment (tenant, name)."""

    queue_depth: GaugeChild
    queue_wait: HistogramChild
    batch_size: HistogramChild
    ready: Gauge
    restarts: Counter
    enabled: bool


class _ByteCounters(Collector):
    """Request and response body bytes per tenant and deployment, read at collect time."""

    def __init__(self, totals: dict[tuple[str, str], list[int]]) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "modelplane_request_bytes", "Inference request body bytes received.", labels=_DEP
        )
        sent = CounterMetricFamily(
            "modelplane_response_bytes", "Inference response body bytes sent.", labels=_DEP
        )
        for (tenant, deployment), (bytes_in, bytes_out) in self.totals.copy().items():
            received.add_metric([tenant, deployment], bytes_in)
            sent.add_metric([tenant, deployment], bytes_out)
        yield received
        yield sent


@dataclass(slots=True)
class BatchMonitor:
    """What the batcher of one replica records: pre-resolved children, no label lookups."""

    queue_depth: GaugeChild
    queue_wait: HistogramChild
    batch_size: HistogramChild
    inference: HistogramChild


class Metrics:
    """One app's metrics. Attribute names match the metric names without ``modelplane_``."""

    def __init__(self, enabled: bool = True, process: bool = True) -> None:
        self.enabled = enabled
        self.registry = r = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        # -- inference requests ---------------------------------------------------
        # Hot-path metrics are monitoring.fast's lock-free ones (same exposition).
        self.requests = FastCounter(
            "modelplane_requests", "Inference and management requests answered.", _REQ, r
        )
        self.request_duration = FastHistogram(
            "modelplane_request_duration_seconds",
            "Time from request body received to response sent.", _REQ, r, LATENCY_BUCKETS,
        )  # fmt: skip
        self.management_requests = FastCounter(
            "modelplane_management_requests",
            "Requests to every non-inference route, by route template.",
            ("method", "route", "status"), r,
        )  # fmt: skip
        # modelplane_request_bytes_total / modelplane_response_bytes_total: plain ints on the
        # hot path (two locked counter increments per request cost more than the rest of
        # the byte counting), turned into counters when scraped.
        self._bytes: dict[tuple[str, str], list[int]] = {}
        r.register(_ByteCounters(self._bytes))
        # -- batching and the model ----------------------------------------------
        self.queue_depth = FastGauge(
            "modelplane_queue_depth", "Requests waiting in the batcher.", _DEP, r
        )
        self.queue_wait = FastHistogram(
            "modelplane_queue_wait_seconds", "Time a request waited before its batch ran.",
            _DEP, r, LATENCY_BUCKETS,
        )  # fmt: skip
        self.batch_size = FastHistogram(
            "modelplane_batch_size", "Rows per batch sent to a model worker.", _DEP, r,
            BATCH_BUCKETS,
        )  # fmt: skip
        self.inference = FastHistogram(
            "modelplane_inference_seconds",
            "Model call time per batch, measured in the model worker process.",
            ("tenant", "deployment", "version"), r, LATENCY_BUCKETS,
        )  # fmt: skip
        # -- deployments and model loading ---------------------------------------
        self.deployment_ready = Gauge(
            "modelplane_deployment_ready", "1 when the deployment serves, else 0.", _DEP,
            registry=r,
        )  # fmt: skip
        self.model_load = Histogram(
            "modelplane_model_load_seconds", "Time to start a worker and load a model.",
            ("format",), buckets=LOAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_load_failures = Counter(
            "modelplane_model_load_failures", "Model loads that failed.", ("format",), registry=r
        )
        self.worker_restarts = Counter(
            "modelplane_worker_restarts", "Model worker processes restarted after dying.", _DEP,
            registry=r,
        )  # fmt: skip
        # Added by the alerts helper: stored-bytes quota rules need it in PromQL too. Set by a
        # refresher from monitoring/alerts/wiring.py.
        self.tenant_stored_bytes = Gauge(
            "modelplane_tenant_stored_bytes", "Bytes of model versions and datasets stored.",
            ("tenant",), registry=r,
        )  # fmt: skip
        # -- jobs and registry ---------------------------------------------------
        self.jobs = Gauge(
            "modelplane_jobs", "Jobs currently in each state (this database).", ("kind", "state"),
            registry=r,
        )  # fmt: skip
        self.job_transitions = Counter(
            "modelplane_job_transitions", "Job state changes made by this process.",
            ("kind", "state"), registry=r,
        )  # fmt: skip
        self.registry_operations = Counter(
            "modelplane_registry_operations", "Registry operations by kind and outcome.",
            ("operation", "status"), registry=r,
        )  # fmt: skip
        # -- LLM serving (recorded by the LLM front end) ---------------------------
        self.generated_tokens = Counter(
            "modelplane_generated_tokens", "Completion tokens generated.", _DEP, registry=r
        )
        self.prompt_tokens = Counter(
            "modelplane_prompt_tokens", "Prompt tokens processed.", _DEP, registry=r
        )
        self.time_to_first_token = Histogram(
            "modelplane_time_to_first_token_seconds", "Time until the first token streamed.",
            _DEP, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.active_sequences = Gauge(
            "modelplane_active_sequences", "Sequences being generated now.", _DEP, registry=r
        )
        self._request_children: dict[tuple[str, ...], tuple[CounterChild, HistogramChild]] = {}
        self._deployments: dict[tuple[str, str], DeploymentMetrics] = {}
        self._inference_children: dict[tuple[str, str, str], HistogramChild] = {}
        self._management_children: dict[tuple[str, str, str], CounterChild] = {}
        # Called (blocking, off the event loop) before each render: gauges read from state.
        self.refreshers: list[Callable[[], None]] = []

    # -- cached children ---------------------------------------------------------
    def request(
        self, protocol: str, tenant: str, deployment: str, version: str, status: str
    ) -> tuple[CounterChild, HistogramChild]:
        key = (protocol, tenant, deployment, version, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.request_duration.labels(*key))
            self._request_children[key] = children
        return children

    def observe_request(
        self, protocol: str, tenant: str, deployment: str, version: str, status: int,
        seconds: float,
    ) -> None:  # fmt: skip
        if not self.enabled:
            return
        counter, histogram = self.request(protocol, tenant, deployment, version, str(status))
        counter.inc()
        histogram.observe(seconds)

    def observe_management(
        self, method: str, route: str, tenant: str, status: int, seconds: float
    ) -> None:
        if not self.enabled:
            return
        key = (method, route, str(status))
        child = self._management_children.get(key)
        if child is None:
            child = self._management_children[key] = self.management_requests.labels(*key)
        child.inc()
        counter, histogram = self.request("management", tenant, "", "", key[2])
        counter.inc()
        histogram.observe(seconds)

    def deployment(self, tenant: str, name: str) -> DeploymentMetrics:
        key = (tenant, name)
        bundle = self._deployments.get(key)
        if bundle is None:
            bundle = DeploymentMetrics(
                queue_depth=self.queue_depth.labels(tenant, name),
                queue_wait=self.queue_wait.labels(tenant, name),
                batch_size=self.batch_size.labels(tenant, name),
                ready=self.deployment_ready.labels(tenant, name),
                restarts=self.worker_restarts.labels(tenant, name),
                enabled=self.enabled,
            )
            self._deployments[key] = bundle
        return bundle

    def batch_monitor(self, tenant: str, deployment: str, version: str) -> BatchMonitor | None:
        """The batcher's children for one replica; ``None`` when metrics are off."""
        if not self.enabled:
            return None
        d = self.deployment(tenant, deployment)
        inference = self.inference_seconds(tenant, deployment, version)
        return BatchMonitor(d.queue_depth, d.queue_wait, d.batch_size, inference)

    def inference_seconds(self, tenant: str, deployment: str, version: str) -> HistogramChild:
        key = (tenant, deployment, version)
        child = self._inference_children.get(key)
        if child is None:
            child = self._inference_children[key] = self.inference.labels(*key)
        return child

    def observe_bytes(self, tenant: str, deployment: str, bytes_in: int, bytes_out: int) -> None:
        totals = self._bytes.get((tenant, deployment))
        if totals is None:
            totals = self._bytes[(tenant, deployment)] = [0, 0]
        totals[0] += bytes_in  # the event loop is the only writer
        totals[1] += bytes_out

    def registry_op(self, operation: str, status: int) -> None:
        if self.enabled:
            self.registry_operations.labels(operation, str(status)).inc()

    def refresh(self) -> None:
        """Update the gauges that are read from state (deployments ready, jobs per state).

        Blocking (it may query the database): call it from a thread. ``render`` calls it."""
        for refresher in self.refreshers:
            try:
                refresher()
            except Exception:  # one failing source must not hide every other metric
                log.exception("metrics refresh failed")

    def render(self) -> bytes:
        """The Prometheus text exposition of this app's registry (blocking: use a thread)."""
        self.refresh()
        return generate_latest(self.registry)
