"""Samples of the live metrics over time, and the windowed maths Prometheus would do on them.

Each evaluation takes a ``Snapshot`` (sample name → series labels → value) of
the few metrics rules read. ``History`` keeps a bounded run of them; a
windowed value compares the newest snapshot with the one taken ``window``
earlier, as ``increase()``/``rate()`` would, and ``histogram_quantile`` follows
Prometheus' interpolation inside the bucket where the rank falls.

Unlike a scraper, this runs inside the process that owns the counters: a
series missing from the older snapshot was created after it, so it counts
from 0, and the history starts with an empty snapshot taken when the
evaluator starts (the app's metrics are created with it, at 0).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.metrics_core import Metric

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Series = dict[Labels, float]
Snapshot = dict[str, Series]
Match = Callable[[Mapping[str, str]], bool]


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


def snapshot(families: Iterable[Metric], names: frozenset[str]) -> Snapshot:
    """The samples called one of ``names`` (``modelplane_requests_total``, ``…_bucket``)."""
    out: Snapshot = {}
    for family in families:
        for sample in family.samples:
            if sample.name in names:
                out.setdefault(sample.name, {})[labels_of(sample.labels)] = float(sample.value)
    return out


class History:
    """Snapshots of the last ``keep_seconds``, at most ``max_samples`` of them.

    When the window is long for the interval, snapshots closer together than
    ``keep_seconds / max_samples`` are not kept (the newest is always used for
    the current value), so memory stays bounded whatever the rules ask.
    """

    def __init__(self, start: float, max_samples: int = 240) -> None:
        self.max_samples = max(2, max_samples)
        self._times: deque[float] = deque([start])
        self._snaps: deque[Snapshot] = deque([{}])
        self._latest: tuple[float, Snapshot] = (start, {})

    def add(self, t: float, snap: Snapshot, keep_seconds: float) -> None:
        self._latest = (t, snap)
        if t - self._times[-1] >= keep_seconds / self.max_samples:
            self._times.append(t)
            self._snaps.append(snap)
        # Keep one snapshot at or before the oldest window start, so windows stay full.
        while len(self._times) > 2 and self._times[1] <= t - keep_seconds:
            self._times.popleft()
            self._snaps.popleft()
        while len(self._times) > self.max_samples:
            self._times.popleft()
            self._snaps.popleft()

    def __len__(self) -> int:
        return len(self._times)

    @property
    def now(self) -> float:
        return self._latest[0]

    def current(self, name: str) -> Series:
        return self._latest[1].get(name, {})

    def base(self, window: float) -> tuple[float, Snapshot]:
        """The newest kept snapshot at least ``window`` old (the oldest one if none is)."""
        times = list(self._times)
        i = bisect_right(times, self.now - window) - 1
        i = max(i, 0)
        return times[i], self._snaps[i]

    def increase(self, name: str, window: float, match: Match) -> tuple[Series, float]:
        """Per series: how much counter ``name`` grew over ``window``; and the seconds covered."""
        t0, old = self.base(window)
        before = old.get(name, {})
        out: Series = {}
        for labels, value in self.current(name).items():
            if not match(dict(labels)):
                continue
            prev = before.get(labels, 0.0)
            out[labels] = value - prev if value >= prev else value  # a reset counts from 0
        return out, self.now - t0


def group(series: Series, by: tuple[str, ...], how: str = "sum") -> Series:
    """``sum by (…)`` / ``max by (…)``: series summed (or maxed) over the labels not in ``by``."""
    out: Series = {}
    for labels, value in series.items():
        d = dict(labels)
        key = tuple((k, d.get(k, "")) for k in by)
        if key in out and how == "max":
            out[key] = max(out[key], value)
        else:
            out[key] = out.get(key, 0.0) + value
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts keyed by ``le``.

    NaN when there were no observations; in the ``+Inf`` bucket, the highest
    finite bound.
    """
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return math.nan
    counts = [buckets[b] for b in bounds]
    for i in range(1, len(counts)):  # deltas of cumulative counts can wobble: keep monotone
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if bounds[i] == math.inf:
        return bounds[-2] if len(bounds) > 1 else math.nan
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    in_bucket = counts[i] - below
    if in_bucket <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / in_bucket


def quantiles(q: float, buckets: Series, by: tuple[str, ...]) -> Series:
    """Per group of ``by`` labels: the ``q`` quantile of ``_bucket`` increases."""
    grouped: dict[Labels, dict[float, float]] = {}
    for labels, value in buckets.items():
        d = dict(labels)
        key = tuple((k, d.get(k, "")) for k in by)
        le = float(d.get("le", "+Inf"))
        per = grouped.setdefault(key, {})
        per[le] = per.get(le, 0.0) + value
    out: Series = {}
    for key, per in grouped.items():
        value = histogram_quantile(q, per)
        if not math.isnan(value):
            out[key] = value
    return out
