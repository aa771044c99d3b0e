"""docs/api.md's metrics table is the metrics the service declares: every series
with exactly its labels (a label left out misleads every query written from it)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter

from service.metrics import ServiceMetrics

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def declared() -> dict[str, tuple[str, ...]]:
    metrics = ServiceMetrics()
    found = {}
    for collector in metrics.registry._collector_to_names:
        name = collector._name + ("_total" if isinstance(collector, Counter) else "")
        found[name] = tuple(collector._labelnames)
    return found


def documented() -> dict[str, tuple[str, ...]]:
    """Rows of the metrics table: names in the first cell, label names in the second
    (the backticked words outside parentheses, which hold label values)."""
    text = PAGE.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`gmaivl_"):
            continue
        labels = tuple(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cells[1])))
        for name in re.findall(r"`(gmaivl_[a-z_]+)`", cells[0]):
            found[name] = labels
    return found


def test_the_metrics_table_names_every_series_with_its_labels():
    assert documented() == declared()
