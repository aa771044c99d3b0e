"""Recent latency percentiles from the gateway's own Prometheus histograms, without
Prometheus and without any work on the request path.

Each read takes the histogram's cumulative bucket counts; the difference from the
snapshot taken about `window` seconds earlier is the recent distribution, and its
quantiles are interpolated inside buckets as PromQL's `histogram_quantile` does.
Snapshots are taken only when someone reads (the operations panel polls).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Histogram

Buckets = dict[float, float]  # upper bound (le) -> cumulative count
QUANTILES = (0.5, 0.9, 0.99)


def bucket_counts(histogram: Histogram, labels: Mapping[str, str]) -> Buckets:
    """Cumulative counts per upper bound, summed over the children matching `labels`."""
    out: Buckets = {}
    for family in histogram.collect():
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(sample.labels["le"])
            out[le] = out.get(le, 0.0) + sample.value
    return out


def quantile(q: float, buckets: Buckets) -> float | None:
    """`histogram_quantile(q, ...)` of cumulative `buckets`; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # above the highest finite bucket: its bound is the answer
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class RecentStats:
    window_seconds: float
    count: int
    quantiles: dict[str, float] | None  # "p50" -> seconds; None without observations


class RecentWindow:
    """Differences of one labelled histogram over (about) the last `window` seconds."""

    def __init__(
        self,
        read: Callable[[], Buckets],
        window: float = 300.0,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.window = window
        self.every = every
        self.clock = clock
        self.started = clock()
        self._snapshots: deque[tuple[float, Buckets]] = deque()

    def stats(self) -> RecentStats:
        now = self.clock()
        current = self.read()
        # Keep one snapshot at or before the window's start: the baseline; a quiet spell
        # then reads as "nothing recent", not as everything since start.
        while len(self._snapshots) >= 2 and self._snapshots[1][0] <= now - self.window:
            self._snapshots.popleft()
        since, base = self._snapshots[0] if self._snapshots else (self.started, {})
        if not self._snapshots or now - self._snapshots[-1][0] >= self.every:
            self._snapshots.append((now, current))
        recent = {le: count - base.get(le, 0.0) for le, count in current.items()}
        count = int(max(recent.values(), default=0.0))
        values = {f"p{round(q * 100)}": quantile(q, recent) for q in QUANTILES}
        known = {k: round(v, 6) for k, v in values.items() if v is not None}
        return RecentStats(round(now - since, 3), count, known or None)
