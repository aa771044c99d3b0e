"""Recent percentiles from cumulative histograms: PromQL's interpolation, and windows
that forget what is older than they are."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram

from service.api.recent_latency import RecentWindow, bucket_counts, quantile

INF = math.inf


def test_quantile_interpolates_inside_buckets_like_histogram_quantile():
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.5], 2 in (0.5, 1]
    buckets = {0.1: 4.0, 0.5: 8.0, 1.0: 10.0, INF: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (5 - 4) / 4)
    assert quantile(0.4, buckets) == pytest.approx(0.1)
    assert quantile(0.9, buckets) == pytest.approx(0.5 + 0.5 * (9 - 8) / 2)
    assert quantile(0.2, buckets) == pytest.approx(0.05)  # from 0 up to the first bound


def test_quantile_without_observations_or_above_the_last_bucket():
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0.0, INF: 0.0}) is None
    assert quantile(0.99, {0.1: 1.0, 1.0: 1.0, INF: 5.0}) == 1.0  # the highest finite bound


def test_bucket_counts_sum_only_the_matching_children():
    h = Histogram(
        "x_seconds", "x", ["route", "lane"], buckets=(0.1, 1.0), registry=CollectorRegistry()
    )
    h.labels("/a", "stat").observe(0.05)
    h.labels("/a", "batch").observe(0.5)
    h.labels("/b", "stat").observe(0.05)
    assert bucket_counts(h, {"route": "/a"}) == {0.1: 1.0, 1.0: 2.0, INF: 2.0}
    assert bucket_counts(h, {"route": "/a", "lane": "stat"}) == {0.1: 1.0, 1.0: 1.0, INF: 1.0}
    assert bucket_counts(h, {"route": "/none"}) == {}


def test_a_window_reports_only_what_happened_within_it():
    h = Histogram("y_seconds", "y", buckets=(0.1, 1.0), registry=CollectorRegistry())
    now = [0.0]
    window = RecentWindow(lambda: bucket_counts(h, {}), window=60, every=5, clock=lambda: now[0])
    for _ in range(10):
        h.observe(0.05)  # ten fast ones at the start
    now[0] = 1.0
    first = window.stats()
    assert first.count == 10 and first.quantiles is not None and first.quantiles["p50"] < 0.1
    for t in range(2, 100, 5):  # the panel polls; nothing happens for a while
        now[0] = float(t)
        window.stats()
    for _ in range(4):
        h.observe(0.8)  # then four slow ones
    now[0] = 100.0
    recent = window.stats()
    assert recent.count == 4 and 60 <= recent.window_seconds <= 65  # one poll's slack
    assert recent.quantiles is not None and 0.1 < recent.quantiles["p50"] <= 1.0
    now[0] = 105.0
    window.stats()  # a snapshot after the slow ones
    now[0] = 200.0
    quiet = window.stats()  # then no poll and no request for 95 s: nothing recent
    assert quiet.count == 0 and quiet.quantiles is None and quiet.window_seconds == 95
