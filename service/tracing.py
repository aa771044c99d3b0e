"""OpenTelemetry traces: off by default, on with the standard `OTEL_*` variables.

Tracing is on when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`
or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_TRACES_EXPORTER` is not
`none`; spans leave over OTLP/HTTP (protobuf) in batches. The SDK reads the
rest itself: `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` (+ `_ARG`),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`. When off, `span()` is a shared
null context and nothing else runs: no cost on the hot path.

What crosses process boundaries is a W3C carrier (`traceparent`, `tracestate`,
and our request id as `baggage`): the gateway takes the client's `traceparent`
and `tracestate` (never its baggage), and a job carries the carrier through the
queue so worker spans join the request's trace. Every span gets the request id
as `gmaivl.request_id`. Span attributes carry no PHI: sizes, counts, kinds,
codes, lanes, never prompts, answers, names or UIDs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("gmaivl.tracing")

REQUEST_ID_KEY = "gmaivl.request_id"
_NULL = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer while tracing is on


def enabled() -> bool:
    return _tracer is not None


def otlp_traces_url() -> str | None:
    """The OTLP/HTTP traces URL the environment names, or None (tracing off)."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if url:
        return url
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def configure(default_service_name: str) -> bool:
    """Install the tracer provider when the environment asks for traces; True if on."""
    global _tracer
    url = otlp_traces_url()
    if url is None or _tracer is not None:
        return _tracer is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(_request_id_processor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("gmaivl")
    for handler in logging.getLogger().handlers:  # logs name the trace they belong to
        handler.addFilter(TraceIdLogFilter())
        fmt = handler.formatter._fmt if handler.formatter is not None else "%(message)s"
        handler.setFormatter(logging.Formatter(f"{fmt} trace_id=%(trace_id)s"))
    log.info("tracing on: OTLP/HTTP to the configured endpoint, service %s", name)
    return True


def shutdown() -> None:
    """Flush and stop (process exit); tracing is off afterwards."""
    global _tracer
    if _tracer is None:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
    _tracer = None


def span(name: str, attributes: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """A context manager for a span under the current one (a null context when off)."""
    if _tracer is None:
        return _NULL
    return _current_span(name, attributes, **kwargs)


@contextlib.contextmanager
def _current_span(name: str, attributes: Mapping[str, Any] | None, **kwargs: Any) -> Iterator[Any]:
    """A current span that records a failure by its type and code only: exception
    messages and stack traces (which quote chained foreign errors) may hold PHI."""
    from opentelemetry.trace import Status, StatusCode

    with _tracer.start_as_current_span(
        name,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
        **kwargs,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR))
            current.set_attribute("error.type", type(exc).__qualname__)
            code = getattr(exc, "code", None)
            if isinstance(code, str):
                current.set_attribute("gmaivl.error_code", code)
            raise


def start_span(name: str, attributes: Mapping[str, Any] | None = None) -> Any | None:
    """A span under the current one that is not made current: for work that ends in
    another step (a stream); end it with `end_span`. None when off."""
    return None if _tracer is None else _tracer.start_span(name, attributes=attributes)


def record_span(
    name: str, started: float, ended: float, attributes: Mapping[str, Any] | None = None
) -> None:
    """A span for something measured after the fact (wall-clock epoch seconds), e.g.
    the time a job waited in the queue, which no process watched as it passed."""
    if _tracer is not None:
        span = _tracer.start_span(name, attributes=attributes, start_time=int(started * 1e9))
        span.end(end_time=int(ended * 1e9))


def end_span(span: Any | None, **attributes: str | int | float | bool) -> None:
    if span is not None:
        for key, value in attributes.items():
            span.set_attribute(f"gmaivl.{key}", value)
        span.end()


def tracer() -> Any:
    return _tracer


@contextlib.contextmanager
def incoming(headers: Mapping[bytes, bytes], request_id: str) -> Iterator[None]:
    """The context of an HTTP request: the client's traceparent/tracestate (if any)
    and our request id as baggage, attached for the duration."""
    if _tracer is None:
        yield
        return
    from opentelemetry import baggage, context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {
        key: headers[raw].decode("latin-1")
        for key, raw in (("traceparent", b"traceparent"), ("tracestate", b"tracestate"))
        if raw in headers
    }
    ctx = TraceContextTextMapPropagator().extract(carrier)
    ctx = baggage.set_baggage(REQUEST_ID_KEY, request_id, context=ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def carrier() -> dict[str, str] | None:
    """The current context as a W3C carrier to send with a job (None when off)."""
    if _tracer is None:
        return None
    from opentelemetry import propagate

    out: dict[str, str] = {}
    propagate.inject(out)
    return out or None


@contextlib.contextmanager
def resumed(job_carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Attach a job's carrier (worker side) for the duration."""
    if _tracer is None or not job_carrier:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(dict(job_carrier)))
    try:
        yield
    finally:
        context.detach(token)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (for audit events and logs)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def _request_id_processor() -> Any:
    """A span processor: every span started under a request's context gets its id."""
    from opentelemetry import baggage
    from opentelemetry.sdk.trace import SpanProcessor

    class RequestIdProcessor(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            request_id = baggage.get_baggage(REQUEST_ID_KEY, parent_context)
            if request_id is not None:
                span.set_attribute(REQUEST_ID_KEY, str(request_id))

    return RequestIdProcessor()


class TraceIdLogFilter(logging.Filter):
    """Adds `trace_id` to every log record ("-" outside a trace or when off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = current_trace_id() or "-"
        return True
