"""Tracing is off unless the environment names an OTLP endpoint, and then costs
nothing: no tracer, one shared null context, no carrier on jobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from service import tracing


def test_off_by_default_and_free():
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.span("y")  # one shared null context, no allocation
    with tracing.span("x") as span:
        assert span is None
    assert tracing.carrier() is None and tracing.current_trace_id() is None
    assert tracing.start_span("x") is None


def test_the_environment_decides(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.otlp_traces_url() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert tracing.otlp_traces_url() == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")
    assert tracing.otlp_traces_url() == "http://c:4318/custom"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.otlp_traces_url() is None


def test_logs_name_the_trace_and_spans_the_request_id():
    """In a child process (a tracer provider is global): a log line inside a request's
    span carries its trace id; the span carries the request id."""
    code = textwrap.dedent(
        """
        import logging, os, sys
        from service.otlp_receiver import OtlpReceiver
        with OtlpReceiver() as receiver:
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
            logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
            from service import tracing
            assert tracing.configure("unit")
            with tracing.incoming({b"traceparent": b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"},
                                  "req-7"):
                with tracing.span("work"):
                    logging.getLogger("t").info("inside")
            tracing.shutdown()
            [span] = receiver.spans
            print("SPAN", span.trace_id, span.parent_span_id, span.attributes["gmaivl.request_id"])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"inside trace_id={'a' * 32}" in out.stdout
    assert f"SPAN {'a' * 32} {'b' * 16} req-7" in out.stdout
