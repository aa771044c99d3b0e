"""Starting and stopping gmai-vl gateway/worker processes and redis-server on
loopback, by PID — used by tests, the chaos run, capacity and loadtest — and an
OTLP/HTTP receiver those processes can send their traces to.

`Cluster` is a distributed deployment on loopback: a real redis-server,
`gmai-vl gateway` and `gmai-vl worker` processes (`python -m service.cli ...`),
each owned by its creator and stopped by PID, never by name."""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

MODEL = "cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(
    base_url: str,
    timeout: float = 120.0,
    process: subprocess.Popen | None = None,
    path: str = "/health/ready",
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not exit within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A real redis-server on a free loopback port, owned (and killable) by its creator."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class Cluster:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.redis = RedisServer().start()
        self.env = {
            **os.environ,
            "GMAIVL_HEARTBEAT_INTERVAL": "0.3",
            "GMAIVL_VISIBILITY_TIMEOUT": "1.5",
            "GMAIVL_FAKE_TOKEN_INTERVAL": "0.01",
            "GMAIVL_AUTH": "off",  # on purpose, on loopback; pass GMAIVL_API_KEYS_FILE for keys
            **env,
        }
        self.gateways: list[tuple[subprocess.Popen, str]] = []
        self.workers: list[tuple[subprocess.Popen, str]] = []

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def add_worker(self, max_concurrency: int = 8, engine: tuple[str, ...] = ("fake",)) -> str:
        """A worker process; `engine` is the engine name and its flags, e.g.
        ("vllm", "--model", DIR, "--kv-cache-memory-bytes", "268435456")."""
        port = free_port()
        process = self._spawn(
            [
                "worker",
                "--redis-url",
                self.redis.url,
                "--engine",
                *engine,
                "--served-model-name",
                MODEL,
                "--metrics-port",
                str(port),
                "--max-concurrency",
                str(max_concurrency),
                "--drain-grace",
                "2",
            ],
            f"worker{len(self.workers)}",
        )
        url = f"http://127.0.0.1:{port}"
        self.workers.append((process, url))
        return url

    def add_gateway(self, ready_timeout: float = 60) -> str:
        port = free_port()
        process = self._spawn(
            [
                "gateway",
                "--redis-url",
                self.redis.url,
                "--served-model-name",
                MODEL,
                "--port",
                str(port),
            ],
            f"gateway{len(self.gateways)}",
        )
        url = f"http://127.0.0.1:{port}"
        self.gateways.append((process, url))
        wait_ready(url, process=process, timeout=ready_timeout)
        return url

    def worker_metric(self, url: str, series: str) -> float:
        text = httpx.get(url + "/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_worker_metrics(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/metrics", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(url)

    def kill_worker(self, index: int) -> None:
        self.workers[index][0].send_signal(signal.SIGKILL)
        self.workers[index][0].wait()

    def close(self) -> None:
        """SIGTERM to all, so workers stop their engines (a vLLM engine core is a child
        process: SIGKILL on the worker would orphan it), then SIGKILL what is left."""
        running = [p for p, _ in self.gateways + self.workers if p.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            stop_process(process, timeout=30)
        self.redis.stop()


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
