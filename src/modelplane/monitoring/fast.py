"""Lock-free counters, gauges and histograms for the hot path, exposed like prometheus_client's.

prometheus_client's metrics take a lock per update and make several Python calls per
``observe``; on the inference path that was most of what metrics cost. These are written
only from the event loop (one writer), so a child is a few plain attributes and an update
is one call. Scrapes read them from another thread: a scrape may see a histogram's count
one observation ahead of its sum, which Prometheus tolerates (prometheus_client makes no
cross-bucket promise either). ``collect()`` yields the same families, sample names and
labels as prometheus_client (``_total`` counters, cumulative ``le`` buckets), so
``promtool``, the alert evaluator and the dashboard see no difference.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # le: amount <= bound
        self.sum += amount


class _Family(Collector):
    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:  # fmt: skip
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], object] = {}
        registry.register(self)

    def _snapshot(self) -> list[tuple[tuple[str, ...], object]]:
        return list(self.children.copy().items())  # copy(): atomic against the event loop


class FastCounter(_Family):
    def labels(self, *values: str) -> CounterChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = CounterChild()
        assert isinstance(child, CounterChild)
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._snapshot():
            assert isinstance(child, CounterChild)
            family.add_metric(list(values), child.value)
        yield family


class FastGauge(_Family):
    def labels(self, *values: str) -> GaugeChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = GaugeChild()
        assert isinstance(child, GaugeChild)
        return child

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._snapshot():
            assert isinstance(child, GaugeChild)
            family.add_metric(list(values), child.value)
        yield family


class FastHistogram(_Family):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str],
        registry: CollectorRegistry, buckets: Sequence[float],
    ) -> None:  # fmt: skip
        super().__init__(name, documentation, labelnames, registry)
        self.bounds = tuple(float(b) for b in buckets if b != float("inf"))
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]

    def labels(self, *values: str) -> HistogramChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = HistogramChild(self.bounds)
        assert isinstance(child, HistogramChild)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._snapshot():
            assert isinstance(child, HistogramChild)
            counts, total, buckets = list(child.counts), 0, []
            for le, n in zip(self._les, counts, strict=True):
                total += n
                buckets.append((le, float(total)))
            family.add_metric(list(values), buckets, child.sum)
        yield family
