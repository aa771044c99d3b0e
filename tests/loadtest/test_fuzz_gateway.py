"""Schemathesis against the gateway's own OpenAPI schema, a bounded run (`make fuzz`
runs the same for longer): zero 5xx, zero responses outside the documented schema."""

from __future__ import annotations

from loadtest.fuzz_gateway import fuzz, start_gateway


def test_bounded_fuzz_run_finds_no_failures(tmp_path):
    base_url, key, server = start_gateway(tmp_path)
    try:
        report = fuzz(base_url, key, seconds=0, examples_per_round=30)
    finally:
        server.should_exit = True
    assert report.cases >= 100
    assert report.failures == []
    assert all(status < 500 for status in report.statuses)
    assert 200 in report.statuses and 400 in report.statuses  # valid and invalid cases ran
