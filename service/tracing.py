"""OpenTelemetry traces: off by default, on with the standard `OTEL_*` variables.

Tracing is on when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`
or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_TRACES_EXPORTER` is not
`none`; spans leave over OTLP/HTTP (protobuf) in batches. The SDK reads the
rest itself: `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` (+ `_ARG`),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`. When off, `span()` is a shared
null context and nothing else runs: no cost on the hot path.

What crosses process boundaries is a W3C carrier (`traceparent`, `tracestate`)
plus our request id: the gateway takes the client's `traceparent` and
`tracestate` (nothing else), and a job carries the carrier through the queue so
worker spans join the request's trace. Every span gets the request id as
`gmaivl.request_id`. Span attributes carry no PHI: sizes, counts, kinds, codes,
lanes, never prompts, answers, names, URLs or UIDs; a failure is recorded by its
error type and code only (messages and stack traces may quote a header).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("gmaivl.tracing")

REQUEST_ID_KEY = "gmaivl.request_id"
_CARRIER_REQUEST_ID = "gmaivl-request-id"  # our key beside traceparent in a job's carrier
_NULL = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_propagator: Any = None  # W3C trace context only: a client's baggage is never taken
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gmaivl_request_id", default=None
)


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
    global _tracer, _propagator
    url = otlp_traces_url()
    if url is None or _tracer is not None:
        return _tracer is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class RequestIdProcessor(SpanProcessor):
        """Every span started while a request is being served gets its id."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            request_id = _request_id.get()
            if request_id is not None:
                span.set_attribute(REQUEST_ID_KEY, request_id)

    name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(RequestIdProcessor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("gmaivl")
    _propagator = TraceContextTextMapPropagator()
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


def span(name: str, attributes: Mapping[str, Any] | None = None, kind: Any = None) -> Any:
    """A context manager for a span under the current one, made current for its body
    (a shared null context yielding None when tracing is off)."""
    if _tracer is None:
        return _NULL
    return _CurrentSpan(name, attributes, kind)


class _CurrentSpan:
    """A current span that records a failure by its type and code only: exception
    messages and stack traces (which quote chained foreign errors) may hold PHI.
    A class, not a generator context manager: this runs several times per request."""

    __slots__ = ("attributes", "kind", "name", "span", "token")

    def __init__(self, name: str, attributes: Mapping[str, Any] | None, kind: Any) -> None:
        self.name, self.attributes, self.kind = name, attributes, kind

    def __enter__(self) -> Any:
        from opentelemetry import context, trace

        kwargs = {} if self.kind is None else {"kind": self.kind}
        self.span = _tracer.start_span(self.name, attributes=self.attributes, **kwargs)
        self.token = context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        from opentelemetry import context

        if exc is not None:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR))
            self.span.set_attribute("error.type", type(exc).__qualname__)
            code = getattr(exc, "code", None)
            if isinstance(code, str):
                self.span.set_attribute("gmaivl.error_code", code)
        context.detach(self.token)
        self.span.end()


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


@contextlib.contextmanager
def incoming(headers: Mapping[bytes, bytes], request_id: str) -> Iterator[None]:
    """The context of an HTTP request: the client's traceparent/tracestate (if any)
    and our request id, attached for the duration."""
    if _tracer is None:
        yield
        return
    from opentelemetry import context

    carrier = {
        key: headers[raw].decode("latin-1")
        for key, raw in (("traceparent", b"traceparent"), ("tracestate", b"tracestate"))
        if raw in headers
    }
    token = context.attach(_propagator.extract(carrier))
    request_token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(request_token)
        context.detach(token)


def carrier() -> dict[str, str] | None:
    """The current context as a carrier to send with a job (None when off)."""
    if _tracer is None:
        return None
    out: dict[str, str] = {}
    _propagator.inject(out)
    request_id = _request_id.get()
    if request_id is not None:
        out[_CARRIER_REQUEST_ID] = request_id
    return out or None


@contextlib.contextmanager
def resumed(job_carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Attach a job's carrier (worker side) for the duration."""
    if _tracer is None or not job_carrier:
        yield
        return
    from opentelemetry import context

    token = context.attach(_propagator.extract(job_carrier))
    request_token = _request_id.set(job_carrier.get(_CARRIER_REQUEST_ID))
    try:
        yield
    finally:
        _request_id.reset(request_token)
        context.detach(token)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (for audit events and logs)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


class TraceIdLogFilter(logging.Filter):
    """Adds `trace_id` to every log record ("-" outside a trace or when off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = current_trace_id() or "-"
        return True
