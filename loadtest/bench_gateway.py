"""Gateway overhead, measured side by side in one run.

The same engine (the package's FakeEngine: a fixed token stream at a fixed
pace) is served twice, one server at a time, each in its own process:

- `gateway`: the full path of `gmai-vl serve` - middleware (request id, body
  cap, metrics), pydantic validation, admission, the in-process queue, the
  worker, the result stream, SSE;
- `thin`: the thinnest uvicorn endpoint that streams the same engine output:
  a raw ASGI callable that parses the JSON body, iterates the engine and
  writes the same chunk bytes (same serializer), nothing else.

A minimal raw-socket HTTP/1.1 client (cheaper than httpx, so the client is not
what saturates) keeps C streams busy for a fixed time at C = 1, 32, 256 and
records time to first token and total latency of every request.

    python loadtest/bench_gateway.py [--seconds 8] [--tokens 16] [--interval 0.02]

Prints req/s, TTFT p50, latency p50/p99 of both and their ratios; writes a
JSON file and a PNG plot (docs/benchmarks/).

`--queue`, `--trace` and `--token` compare two gateways instead (Redis vs
in-process queue; tracing on vs off; an IdP's access token vs an API key, on
one gateway configuration with both, against an IdP stand-in on loopback that
publishes a discovery document and one RSA key). `--queue` adds a third
server, `split`: `gmai-vl gateway` and `gmai-vl worker` as separate processes
(as deployed), each one's CPU per request reported, and beside them
redis-server's (`INFO cpu`), its commands per request by type (`INFO
commandstats`: calls and microseconds) and the bytes per request on the wire
(`INFO stats`). `--repeat N` runs every server N times, interleaved, and
reports the medians. `--profile DIR` records each Python server process at
the highest level with py-spy (flame graph SVGs in DIR).

    python loadtest/bench_gateway.py --responses [--runs 3]

compares the two endpoints of one gateway instead: `/v1/responses` (semantic
events) beside `/v1/chat/completions` (chunks), same prompt, same engine,
levels interleaved (chat, responses, chat, ... at each level), the median of
`--runs` runs per endpoint and level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
MODEL = "bench"
FIRST_TEXT = re.compile(rb'"content":"[^"]')  # a chunk carrying generated text
FIRST_DELTA = re.compile(rb'"delta":"[^"]')  # a Responses delta event carrying text


# --- the two servers -------------------------------------------------------------


def gateway_app(interval: float, redis_url: str | None = None):
    from service.config import Settings
    from service.embedded import build_embedded
    from service.engines.fake import FakeEngine

    settings = Settings(
        engine="fake", served_model_name=MODEL, queue_max_depth=4096, redis_url=redis_url
    )
    return build_embedded(settings, FakeEngine(token_interval=interval)).app


def thin_app(interval: float):
    from service.api.responses import DONE, ChunkWriter
    from service.core.generation import Delta, GenerationRequest, SamplingParams
    from service.engines.fake import FakeEngine

    engine = FakeEngine(token_interval=interval)
    engine.startup_delay = 0.0
    engine._ready = True  # nothing to load

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.loads(body)
        request = GenerationRequest(
            "thin",
            [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
            SamplingParams(payload["max_tokens"]),
        )
        chunk = ChunkWriter("thin", int(time.time()), MODEL, False)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "more_body": True, "body": chunk.role().encode()})
        async for event in engine.generate(request):
            text = (
                chunk.content(event.text)
                if isinstance(event, Delta)
                else chunk.finish(event.finish_reason) + DONE
            )
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def run_server(kind: str, port: int, interval: float, redis_url: str | None) -> None:
    import logging

    import uvicorn

    logging.disable(logging.INFO)
    if kind == "thin":
        app = thin_app(interval)
    elif kind in ("gateway-key", "gateway-token"):  # keys and OIDC from the environment
        app = gateway_app(interval, None)
    elif kind == "gateway-traced":
        from service import tracing

        assert tracing.configure("bench"), "OTEL_EXPORTER_OTLP_ENDPOINT is not set"
        app = gateway_app(interval, None)
    else:
        app = gateway_app(interval, redis_url if kind == "gateway-redis" else None)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        access_log=False,
        loop="uvloop",
        http="httptools",
        backlog=4096,
    )


def split_processes(port: int, args: argparse.Namespace) -> list[subprocess.Popen]:
    """`gmai-vl gateway` and `gmai-vl worker` (fake engine) as separate processes."""
    env = {
        **os.environ,
        "GMAIVL_FAKE_TOKEN_INTERVAL": str(args.interval),
        "GMAIVL_MAX_CONCURRENCY": "1024",
        "GMAIVL_QUEUE_MAX_DEPTH": "4096",
        "GMAIVL_LOG_LEVEL": "warning",
    }
    common = ["--redis-url", args.redis_url, "--served-model-name", MODEL]
    cli = [sys.executable, "-m", "service.cli"]
    quiet = {"cwd": ROOT, "env": env, "stdout": subprocess.DEVNULL}
    return [
        subprocess.Popen([*cli, "gateway", *common, "--port", str(port)], **quiet),
        subprocess.Popen([*cli, "worker", *common, "--engine", "fake"], **quiet),
    ]


class RedisStats:
    """redis-server's own counters, read with INFO before and after a level."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def snapshot(self) -> dict:
        info = self.client.info("everything")
        return {
            "cpu": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            "in": int(info["total_net_input_bytes"]),
            "out": int(info["total_net_output_bytes"]),
            "commands": {
                k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
                for k, v in info.items()
                if k.startswith("cmdstat_")
            },
        }

    @staticmethod
    def per_request(before: dict, after: dict, requests: int) -> dict:
        n = max(requests, 1)
        commands = {}
        for name, (calls, usec) in after["commands"].items():
            calls0, usec0 = before["commands"].get(name, (0, 0))
            if calls > calls0 and name not in ("info", "config|resetstat"):
                commands[name] = [(calls - calls0) / n, (usec - usec0) / n]
        return {
            "cpu_ms_per_request": (after["cpu"] - before["cpu"]) * 1e3 / n,
            "bytes_in_per_request": (after["in"] - before["in"]) / n,
            "bytes_out_per_request": (after["out"] - before["out"]) / n,
            "commands_per_request": dict(sorted(commands.items())),
        }


# --- the client ------------------------------------------------------------------


async def one_stream(
    reader, writer, request: bytes, first_text: re.Pattern[bytes] = FIRST_TEXT
) -> tuple[float, float]:
    """Send one streaming request on a keep-alive connection; (ttft, total) seconds."""
    started = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    ttft = 0.0
    while True:  # chunked transfer encoding
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            return ttft, time.perf_counter() - started
        data = await reader.readexactly(size + 2)
        if not ttft and first_text.search(data):
            ttft = time.perf_counter() - started


def request_body(endpoint: str, tokens: int) -> tuple[str, dict]:
    """The path and body of one streaming request: chat or Responses, same prompt."""
    if endpoint == "responses":
        body = {"model": MODEL, "stream": True, "max_output_tokens": tokens, "store": False}
        return "/v1/responses", {**body, "input": "Describe the image."}
    body = {"model": MODEL, "stream": True, "max_tokens": tokens}
    return "/v1/chat/completions", {
        **body,
        "messages": [{"role": "user", "content": "Describe the image."}],
    }


async def load(
    port: int,
    concurrency: int,
    seconds: float,
    tokens: int,
    stagger: float = 0.0,
    endpoint: str = "chat",
    authorization: bytes = b"",
) -> dict:
    path, payload = request_body(endpoint, tokens)
    first_text = FIRST_DELTA if endpoint == "responses" else FIRST_TEXT
    body = json.dumps(payload).encode()
    request = (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: bench\r\n"
        + (b"Authorization: " + authorization + b"\r\n" if authorization else b"")
        + b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    ttfts: list[float] = []
    totals: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def user(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        if stagger:
            # Spread the users' phases over one request's duration: with identical
            # service times, users started together stay in lockstep and every request
            # of a level arrives in the same millisecond, which real traffic does not do.
            await asyncio.sleep(index / concurrency * stagger)
        while time.perf_counter() < stop_at:
            try:
                ttft, total = await one_stream(reader, writer, request, first_text)
            except (RuntimeError, OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            ttfts.append(ttft)
            totals.append(total)
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "requests": len(totals),
        "errors": errors,
        "rps": len(totals) / elapsed,
        "ttft_p50_ms": pct(ttfts, 50) * 1e3,
        "p50_ms": pct(totals, 50) * 1e3,
        "p99_ms": pct(totals, 99) * 1e3,
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


# --- an IdP stand-in (--token) -------------------------------------------------------


class IdpStandIn:
    """A discovery document and one RSA key on loopback (what the gateway fetches from an
    IdP), a key file with one tenant, an API key and an access token for it."""

    AUDIENCE = "api://gmaivl-bench"

    def __enter__(self) -> IdpStandIn:
        import tempfile
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        from service.security.keys import KeyFile
        from service.security.policy import UNLIMITED

        self.dir = Path(tempfile.mkdtemp(prefix="bench-idp-"))
        keys = KeyFile(tenants={"bench": UNLIMITED})  # declared: the token's group names it
        self.key = keys.create("bench")
        keys.save(self.dir / "keys.json")
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        documents = {
            "/.well-known/openid-configuration": {
                "issuer": self.issuer,
                "jwks_uri": self.issuer + "/jwks",
            },
            "/jwks": {"keys": [{**jwk, "kid": "bench-key", "use": "sig", "alg": "RS256"}]},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.AUDIENCE, "sub": "bench-user", "iat": now,
                  "exp": now + 3600, "groups": ["bench"], "scope": "gmaivl.chat"}  # fmt: skip
        self.private = private
        self.token = jwt.encode(
            claims, private, "RS256", headers={"kid": "bench-key", "typ": "at+jwt"}
        )
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    def gateway_env(self) -> dict[str, str]:
        return {
            "GMAIVL_API_KEYS_FILE": str(self.dir / "keys.json"),
            "GMAIVL_OIDC_ISSUER": self.issuer,
            "GMAIVL_OIDC_AUDIENCE": self.AUDIENCE,
        }

    def credentials(self) -> dict[str, bytes]:
        return {
            "gateway-key": b"Bearer " + self.key.encode(),
            "gateway-token": b"Bearer " + self.token.encode(),
        }

    def report_verify_cost(self, rounds: int = 2000) -> None:
        """In process: one verification with the signature checked vs one from the cache."""
        from service.components import idp_fetch
        from service.media.fetch import FetchLimits, SafeFetcher
        from service.security.jwks import JwksCache
        from service.security.tokens import TokenVerifier

        async def timed() -> tuple[float, float]:
            fetcher = SafeFetcher(FetchLimits(max_bytes=1 << 20))
            jwks = JwksCache(self.issuer, idp_fetch(fetcher, self.issuer))
            full = TokenVerifier(self.issuer, self.AUDIENCE, jwks, cache_size=0)
            cached = TokenVerifier(self.issuer, self.AUDIENCE, jwks)
            await full.verify(self.token)
            costs = []
            for verifier in (full, cached):
                began = time.perf_counter()
                for _ in range(rounds):
                    await verifier.verify(self.token)
                costs.append((time.perf_counter() - began) / rounds)
            await fetcher.aclose()
            return costs[0], costs[1]

        full, cached = asyncio.run(timed())
        print(
            f"token verification in process: {full * 1e6:.1f} us with the RS256 signature "
            f"checked, {cached * 1e6:.1f} us from the cache of verified tokens",
            flush=True,
        )


# --- orchestration -----------------------------------------------------------------


@dataclass
class Row:
    concurrency: int
    server: str
    requests: int
    errors: int
    rps: float
    ttft_p50_ms: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float  # the server processes' CPU time (user + system) per request
    round: int = 0
    cpu_ms_by_process: dict | None = None  # split: gateway and worker apart
    redis: dict | None = None  # redis-server's CPU, commands and bytes per request


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc). Unlike throughput,
    CPU per request does not depend on what else the machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(kind: str, args: argparse.Namespace, round_: int = 0) -> list[Row]:
    port = free_port()
    if kind == "split":
        servers = split_processes(port, args)
        names = ["gateway", "worker"]
    else:
        servers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    kind,
                    "--port",
                    str(port),
                    "--interval",
                    str(args.interval),
                    *(["--redis-url", args.redis_url] if args.redis_url else []),
                ],
                cwd=ROOT,
                env={**os.environ, **getattr(args, "server_env", {})},
            )
        ]
        names = ["server"]
    uses_redis = kind in ("split", "gateway-redis")
    stats = RedisStats(args.redis_url) if uses_redis else None
    authorization = getattr(args, "credentials", {}).get(kind, b"")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or any(s.poll() is not None for s in servers):
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.05)
        for _ in range(100):  # warm-up; a split worker may still be starting
            warm = asyncio.run(load(port, 4, 1.0, args.tokens, authorization=authorization))
            if warm["requests"]:
                break
        rows = []
        for concurrency in args.concurrency:
            stagger = 0.0 if args.lockstep else args.tokens * args.interval
            cpu_before = [process_cpu_seconds(s.pid) for s in servers]
            redis_before = stats.snapshot() if stats else None
            profilers = []
            if args.profile and concurrency == max(args.concurrency) and round_ == 0:
                profilers = [
                    profile(s.pid, args.profile / f"flame_{kind}_{name}_{concurrency}.svg", args)
                    for s, name in zip(servers, names, strict=True)
                ]
            result = asyncio.run(
                load(
                    port,
                    concurrency,
                    args.seconds,
                    args.tokens,
                    stagger,
                    authorization=authorization,
                )
            )
            n = max(result["requests"], 1)
            by_process = {
                name: (process_cpu_seconds(s.pid) - before) * 1e3 / n
                for s, name, before in zip(servers, names, cpu_before, strict=True)
            }
            redis_cost = (
                RedisStats.per_request(redis_before, stats.snapshot(), n) if stats else None
            )
            for profiler in profilers:
                profiler.wait(timeout=60)
            result["cpu_ms_per_request"] = sum(by_process.values())
            rows.append(
                Row(
                    concurrency,
                    kind,
                    **result,
                    round=round_,
                    cpu_ms_by_process=by_process if len(servers) > 1 else None,
                    redis=redis_cost,
                )
            )
            parts = (
                "".join(f" {k} {v:.3f}" for k, v in by_process.items()) if len(servers) > 1 else ""
            )
            if redis_cost:
                parts += f" redis-server {redis_cost['cpu_ms_per_request']:.3f}"
            print(
                f"  {kind:13s} c={concurrency:<4d} {result['rps']:8.1f} req/s  "
                f"ttft p50 {result['ttft_p50_ms']:7.2f} ms  p50 {result['p50_ms']:7.2f} ms  "
                f"p99 {result['p99_ms']:7.2f} ms  cpu/req {result['cpu_ms_per_request']:.3f} ms"
                f"{parts}  errors {result['errors']}  load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        return rows
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait(timeout=10)


def start_server(kind: str, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    """A server process of `kind`, started and warmed up; its process and port."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
            "--interval",
            str(args.interval),
            *(["--redis-url", args.redis_url] if args.redis_url else []),
        ],
        cwd=ROOT,
        env={**os.environ, **getattr(args, "server_env", {})},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"{kind} server did not start") from None
            time.sleep(0.05)
    authorization = getattr(args, "credentials", {}).get(kind, b"")
    asyncio.run(load(port, 4, 1.0, args.tokens, authorization=authorization))  # warm-up
    return server, port


def level(
    server: subprocess.Popen,
    port: int,
    label: str,
    concurrency: int,
    args: argparse.Namespace,
    endpoint: str = "chat",
    authorization: bytes = b"",
) -> Row:
    """One load level against a running server, with the server's CPU per request."""
    stagger = 0.0 if args.lockstep else args.tokens * args.interval
    cpu_before = process_cpu_seconds(server.pid)
    result = asyncio.run(
        load(port, concurrency, args.seconds, args.tokens, stagger, endpoint, authorization)
    )
    cpu = process_cpu_seconds(server.pid) - cpu_before
    result["cpu_ms_per_request"] = cpu * 1e3 / max(result["requests"], 1)
    print(
        f"  {label:13s} c={concurrency:<4d} {result['rps']:8.1f} req/s  "
        f"ttft p50 {result['ttft_p50_ms']:7.2f} ms  p50 {result['p50_ms']:7.2f} ms  "
        f"p99 {result['p99_ms']:7.2f} ms  cpu/req {result['cpu_ms_per_request']:.3f} ms  "
        f"errors {result['errors']}",
        flush=True,
    )
    return Row(concurrency, label, **result)


def measure_endpoints(args: argparse.Namespace) -> list[Row]:
    """Chat and Responses on one gateway, interleaved per level; the median run of each
    (by throughput) stands for it."""
    server, port = start_server("gateway", args)
    try:
        rows = []
        for concurrency in args.concurrency:
            runs: dict[str, list[Row]] = {"chat": [], "responses": []}
            for _ in range(args.runs):
                for endpoint in runs:
                    runs[endpoint].append(
                        level(server, port, endpoint, concurrency, args, endpoint)
                    )
            rows += [_median_row(made) for made in runs.values()]
        return rows
    finally:
        server.terminate()
        server.wait(timeout=10)


def _median_row(rows: list[Row]) -> Row:
    """Each figure's median over the runs (errors summed)."""
    figures = {
        name: statistics.median(getattr(r, name) for r in rows)
        for name in ("rps", "ttft_p50_ms", "p50_ms", "p99_ms", "cpu_ms_per_request")
    }
    requests = int(statistics.median(r.requests for r in rows))
    errors = sum(r.errors for r in rows)
    return Row(rows[0].concurrency, rows[0].server, requests, errors, **figures)


def profile(pid: int, path: Path, args: argparse.Namespace) -> subprocess.Popen:
    """py-spy on one server process for the level's duration -> a flame graph SVG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
         "--rate", "200", "--nonblocking", "--format", "flamegraph", "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def medians(rows: list[Row]) -> dict[tuple[str, int], Row]:
    """Per (server, streams): the median of each figure over the interleaved rounds."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.server, r.concurrency), []).append(r)
    out = {}
    for key, rs in groups.items():
        med = {
            f: statistics.median(getattr(r, f) for r in rs)
            for f in ("requests", "errors", "rps", "ttft_p50_ms", "p50_ms", "p99_ms",
                      "cpu_ms_per_request")
        }  # fmt: skip
        by_process = None
        if rs[0].cpu_ms_by_process:
            by_process = {
                k: statistics.median(r.cpu_ms_by_process[k] for r in rs)
                for k in rs[0].cpu_ms_by_process
            }
        redis = None
        if rs[0].redis:
            redis = {
                k: statistics.median(r.redis[k] for r in rs)
                for k in ("cpu_ms_per_request", "bytes_in_per_request", "bytes_out_per_request")
            }
            names = sorted({c for r in rs for c in r.redis["commands_per_request"]})
            redis["commands_per_request"] = {
                c: [
                    statistics.median(r.redis["commands_per_request"].get(c, [0, 0])[i] for r in rs)
                    for i in (0, 1)
                ]
                for c in names
            }
        out[key] = Row(key[1], key[0], **med, cpu_ms_by_process=by_process, redis=redis)
    return out


def report(rows: list[Row], args: argparse.Namespace) -> str:
    base, *cands = args.kinds
    by = medians(rows)
    rounds = max(r.round for r in rows) + 1
    lines = [
        f"{', '.join(cands)} vs {base}: {args.tokens} tokens per stream, one every "
        f"{args.interval * 1e3:g} ms, {args.seconds:g} s per level, {os.cpu_count()} cores"
        + (f"; medians of {rounds} interleaved rounds." if rounds > 1 else "."),
        "",
        "| streams | server | req/s | TTFT p50 ms | p50 ms | p99 ms | CPU ms/req | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in args.concurrency:
        for kind in args.kinds:
            r = by[(kind, c)]
            lines.append(
                f"| {c} | {kind} | {r.rps:.1f} | {r.ttft_p50_ms:.2f} | {r.p50_ms:.2f} | "
                f"{r.p99_ms:.2f} | {r.cpu_ms_per_request:.3f} | {r.errors:g} |"
            )
    lines += [
        "",
        "| streams | server | throughput vs " + base + " | added TTFT p50 ms | added p50 ms "
        "| added p99 ms | CPU per request vs " + base + " |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in args.concurrency:
        t = by[(base, c)]
        for kind in cands:
            g = by[(kind, c)]
            lines.append(
                f"| {c} | {kind} | {g.rps / t.rps:.3f} | {g.ttft_p50_ms - t.ttft_p50_ms:+.2f} | "
                f"{g.p50_ms - t.p50_ms:+.2f} | {g.p99_ms - t.p99_ms:+.2f} | "
                f"{g.cpu_ms_per_request / t.cpu_ms_per_request:.3f}x |"
            )
    with_redis = [(k, c) for c in args.concurrency for k in cands if by[(k, c)].redis]
    if with_redis:
        lines += [
            "",
            "CPU ms per request by process (redis-server from INFO cpu), bytes per request "
            "on the wire to and from Redis (INFO stats):",
            "",
            "| streams | server | gateway | worker | Python total | redis-server | all "
            "| bytes in | bytes out |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for k, c in with_redis:
            r = by[(k, c)]
            procs = r.cpu_ms_by_process or {"gateway": r.cpu_ms_per_request, "worker": None}
            cell = [f"{procs.get(p):.3f}" if procs.get(p) is not None else "(same)"
                    for p in ("gateway", "worker")]  # fmt: skip
            rc = r.redis["cpu_ms_per_request"]
            lines.append(
                f"| {c} | {k} | {cell[0]} | {cell[1]} | {r.cpu_ms_per_request:.3f} | {rc:.3f} | "
                f"{r.cpu_ms_per_request + rc:.3f} | {r.redis['bytes_in_per_request']:.0f} | "
                f"{r.redis['bytes_out_per_request']:.0f} |"
            )
        lines += ["", "Redis commands per request (calls, µs inside redis-server):", ""]
        lines += [
            "| streams | server | command | calls/req | µs/req |",
            "| ---: | --- | --- | ---: | ---: |",
        ]
        for k, c in with_redis:
            for name, (calls, usec) in by[(k, c)].redis["commands_per_request"].items():
                if calls >= 0.005:
                    lines.append(f"| {c} | {k} | {name} | {calls:.2f} | {usec:.1f} |")
    return "\n".join(lines)


def plot(rows: list[Row], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    by = medians(rows)
    for kind, color in zip(args.kinds, ("#888888", "#1f77b4", "#d62728"), strict=False):
        sel = sorted((r for (k, _), r in by.items() if k == kind), key=lambda r: r.concurrency)
        x = [r.concurrency for r in sel]
        axes[0].plot(x, [r.rps for r in sel], "o-", color=color, label=kind)
        axes[1].plot(x, [r.ttft_p50_ms for r in sel], "o-", color=color, label=kind)
        axes[2].plot(x, [r.p50_ms for r in sel], "o-", color=color, label=f"{kind} p50")
        axes[2].plot(x, [r.p99_ms for r in sel], "s--", color=color, label=f"{kind} p99")
    for ax, title in zip(
        axes, ("throughput (req/s)", "TTFT p50 (ms)", "latency (ms)"), strict=True
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"{', '.join(args.kinds)}, same fake engine ({args.tokens} tokens @ "
        f"{args.interval * 1e3:g} ms)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between tokens")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="start all users together (every level's requests arrive at once)",
    )
    parser.add_argument(
        "--queue",
        action="store_true",
        help="queue overhead instead: the same embedded server with the Redis queue "
        "vs the in-process queue (starts its own redis-server)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="tracing cost instead: the embedded server with OpenTelemetry tracing on "
        "(every request sampled, spans exported over OTLP/HTTP to a local sink) vs off",
    )
    parser.add_argument(
        "--token",
        action="store_true",
        help="authentication cost instead: one gateway with keys and OIDC on, requests "
        "with an IdP's access token vs with an API key",
    )
    parser.add_argument(
        "--responses",
        action="store_true",
        help="/v1/responses vs /v1/chat/completions on one gateway, interleaved, "
        "the median of --runs runs",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per level (--responses)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, interleaved; the report takes medians"
    )
    parser.add_argument(
        "--no-split",
        action="store_true",
        help="with --queue: leave out the separate gateway and worker processes",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy each Python server at the highest level (first round) -> SVGs here",
    )
    parser.add_argument("--name", help="output file stem (default: by mode)")
    parser.add_argument(
        "--serve",
        choices=[
            "gateway",
            "gateway-redis",
            "gateway-traced",
            "gateway-key",
            "gateway-token",
            "thin",
        ],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port, args.interval, args.redis_url)
        return
    args.kinds = ["gateway", "gateway-redis"] if args.queue else ["thin", "gateway"]
    if args.queue and not args.no_split:
        args.kinds.append("split")
    name = "queue_overhead" if args.queue else "gateway_overhead"
    if args.trace:
        args.kinds, name = ["gateway", "gateway-traced"], "tracing_overhead"
    if args.responses:
        args.kinds, name = ["chat", "responses"], "responses_overhead"
    idp = None
    if args.token:
        args.kinds, name = ["gateway-key", "gateway-token"], "token_overhead"
        idp = IdpStandIn().__enter__()
        args.server_env, args.credentials = idp.gateway_env(), idp.credentials()
        idp.report_verify_cost()
    redis_server = None
    sink = None
    if args.trace:
        from service.otlp_receiver import OtlpReceiver

        sink = OtlpReceiver(keep=False).__enter__()
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url  # read by the traced server only
    if args.queue:
        from service.processes import RedisServer

        redis_server = RedisServer().start()
        args.redis_url = redis_server.url
    try:
        if args.responses:
            rows = measure_endpoints(args)
        else:
            rows = [
                row
                for round_ in range(args.repeat)
                for kind in args.kinds
                for row in measure(kind, args, round_)
            ]
    finally:
        if redis_server is not None:
            redis_server.stop()
        if idp is not None:
            idp.__exit__(None, None, None)
        if sink is not None:
            sink.__exit__(None, None, None)
            print(f"\nthe traced server sent {sink.exports} OTLP exports")
    text = report(rows, args)
    print("\n" + text)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    name = args.name or name
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    secret = ("redis_url", "server_env", "credentials", "profile")
    saved = {k: v for k, v in vars(args).items() if k not in secret}
    (OUT_DIR / f"{name}.json").write_text(
        json.dumps({"args": saved, "rows": [asdict(r) for r in rows]}, indent=2)
    )
    plot(rows, args, OUT_DIR / f"{name}.png")
    print(f"\nwrote {OUT_DIR / (name + '.json')} and {name}.png")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
