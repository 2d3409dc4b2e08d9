"""The hot path's lock-free metrics expose exactly what prometheus_client's would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelplane.monitoring.fast import FastCounter, FastGauge, FastHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0, 0.001, 0.0011, 0.05, 0.1, 0.5, 1.0, 2.0, 1e9]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_same_samples_as_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    c = Counter("x_requests", "doc", ["a"], registry=theirs)
    g = Gauge("x_depth", "doc", ["a"], registry=theirs)
    h = Histogram("x_seconds", "doc", ["a"], buckets=BUCKETS, registry=theirs)
    fc = FastCounter("x_requests", "doc", ["a"], ours)
    fg = FastGauge("x_depth", "doc", ["a"], ours)
    fh = FastHistogram("x_seconds", "doc", ["a"], ours, BUCKETS)
    for label in ("one", "two"):
        for v in VALUES:
            c.labels(label).inc(2)
            fc.labels(label).inc(2)
            h.labels(label).observe(v)
            fh.labels(label).observe(v)
        g.labels(label).set(7)
        fg.labels(label).set(7)
    mine = samples(ours)
    assert mine == samples(theirs)
    assert mine[("x_seconds_bucket", (("a", "one"), ("le", "0.001")))] == 2  # <= bound
    assert mine[("x_seconds_count", (("a", "two"),))] == len(VALUES)
