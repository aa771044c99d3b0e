"""An OTLP/HTTP traces endpoint on loopback, for tests and the tracing benchmark:
processes started with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url send it their spans."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass


@dataclass
class ReceivedSpan:
    """One span as an OTLP receiver got it (ids as hex)."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, object]
    events: list[tuple[str, int, dict[str, object]]]  # name, time (ns), attributes

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on loopback (`POST /v1/traces`, protobuf), for tests
    and the tracing benchmark: spans are decoded and kept in memory. Point processes at
    it with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url. With `keep=False` it only
    counts the exports (a cheap sink for benchmarks)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.exports = 0
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces":
                    receiver.exports += 1
                    if receiver.keep:
                        receiver._accept(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def _accept(self, body: bytes) -> None:
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes=_attributes(span.attributes, MessageToDict),
                            events=[
                                (e.name, e.time_unix_nano, _attributes(e.attributes, MessageToDict))
                                for e in span.events
                            ],
                        )
                    )
        with self._lock:
            self.spans += received


def _attributes(attributes: object, to_dict: object) -> dict[str, object]:
    """OTLP key-values -> {key: plain value}."""
    out: dict[str, object] = {}
    for item in attributes:  # type: ignore[attr-defined]
        value = to_dict(item.value)  # type: ignore[operator]
        kind, plain = next(iter(value.items())) if value else ("", None)
        out[item.key] = int(plain) if kind == "intValue" else plain  # int64 arrives as text
    return out
