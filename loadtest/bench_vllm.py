"""The same checkpoint behind three front doors, measured side by side in one run.

  (a) vllm     vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`)
  (b) gmai-vl  our gateway + queue + vLLM worker (`gmai-vl serve --engine vllm`)
  (c) litellm  the LiteLLM proxy forwarding to (a), what many teams put in front of vLLM

Load: one image (PNG data URL) + a question, streaming, 32 output tokens (the
prompt is one the untrained tiny model never ends early), at each concurrency
level for a fixed time. Servers run one at a time (2 cores: no contention
between them); (c) runs while (a) is up, since it forwards to it.

Prints req/s, output tok/s, TTFT and inter-token latency (ITL) p50/p99 and the
ratios to (a); writes JSON and a plot to docs/benchmarks/.

    python loadtest/bench_vllm.py --model CKPT [--litellm /path/to/venv/bin/litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.processes import free_port, stop_process, wait_ready  # noqa: E402

MODEL = "tiny"
VLLM_FLAGS = ["--dtype", "float32", "--kv-cache-memory-bytes", str(512 << 20), "--enforce-eager"]


@dataclass
class Row:
    server: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float


def image_url() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 20, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def body(tokens: int) -> dict:
    return {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url()}},
                    {"type": "text", "text": "hi"},
                ],
            }
        ],
    }


async def one_stream(client: httpx.AsyncClient, payload: dict) -> tuple[float, float, int]:
    """(ttft, total seconds, completion tokens) of one streamed chat completion."""
    started = time.perf_counter()
    ttft, tokens = 0.0, 0
    async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or ():
                if not ttft and (choice.get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
    return ttft, time.perf_counter() - started, tokens


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Tally:
    """What streamed requests gave: TTFTs, inter-token latencies, tokens, errors."""

    ttfts: list[float] = field(default_factory=list)
    itls: list[float] = field(default_factory=list)
    generated: int = 0
    errors: int = 0

    async def stream(self, client: httpx.AsyncClient, payload: dict) -> None:
        try:
            ttft, total, n = await one_stream(client, payload)
        except (RuntimeError, httpx.HTTPError):
            self.errors += 1
            return
        self.ttfts.append(ttft)
        self.generated += n
        if n > 1:
            self.itls.append((total - ttft) / (n - 1))


async def load(
    base_url: str, concurrency: int, seconds: float, tokens: int, headers: dict | None = None
) -> dict:
    payload = body(tokens)
    tally = Tally()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=120, limits=limits, headers=headers
    ) as client:
        stop_at = time.perf_counter() + seconds

        async def user() -> None:
            while time.perf_counter() < stop_at:
                await tally.stream(client, payload)

        began = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "requests": len(tally.ttfts),
        "errors": tally.errors,
        "rps": len(tally.ttfts) / elapsed,
        "tokens_per_s": tally.generated / elapsed,
        "ttft_p50_ms": pct(tally.ttfts, 50) * 1e3,
        "ttft_p99_ms": pct(tally.ttfts, 99) * 1e3,
        "itl_p50_ms": pct(tally.itls, 50) * 1e3,
        "itl_p99_ms": pct(tally.itls, 99) * 1e3,
    }


def start(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env or os.environ, cwd=ROOT
    )


def measure(
    name: str, base_url: str, args: argparse.Namespace, headers: dict | None = None
) -> list[Row]:
    asyncio.run(load(base_url, 2, 2.0, args.tokens, headers))  # warm-up
    rows = []
    for concurrency in args.concurrency:
        result = asyncio.run(load(base_url, concurrency, args.seconds, args.tokens, headers))
        rows.append(Row(name, concurrency, **result))
        print(
            f"  {name:8s} c={concurrency:<3d} {result['rps']:7.1f} req/s "
            f"{result['tokens_per_s']:8.0f} tok/s  TTFT p50 {result['ttft_p50_ms']:7.1f} ms  "
            f"ITL p50 {result['itl_p50_ms']:6.2f} ms  errors {result['errors']}",
            flush=True,
        )
    return rows


def litellm_config(upstream: str, path: Path) -> Path:
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: unused\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
    )
    return path


def run_all(args: argparse.Namespace, logs: Path) -> list[Row]:
    rows: list[Row] = []
    vllm_port = free_port()
    vllm_url = f"http://127.0.0.1:{vllm_port}"
    vllm = start(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(args.model),
            "--served-model-name",
            MODEL,
            "--port",
            str(vllm_port),
            "--max-num-seqs",
            str(max(args.concurrency)),
            *VLLM_FLAGS,
        ],
        logs / "vllm.log",
    )
    try:
        wait_ready(vllm_url, timeout=600, process=vllm, path="/health")
        print("(a) vLLM's own OpenAI server", flush=True)
        rows += measure("vllm", vllm_url, args)
        if args.litellm:
            port = free_port()
            key = "sk-bench-" + os.urandom(16).hex()  # the proxy refuses to start without one
            env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": key}
            proxy = start(
                [
                    args.litellm,
                    "--config",
                    str(litellm_config(vllm_url, logs / "litellm.yaml")),
                    "--port",
                    str(port),
                    "--num_workers",
                    "1",
                ],
                logs / "litellm.log",
                env,
            )
            try:
                proxy_url = f"http://127.0.0.1:{port}"
                wait_ready(proxy_url, timeout=300, process=proxy, path="/health/liveliness")
                print("(c) LiteLLM proxy -> (a)", flush=True)
                rows += measure("litellm", proxy_url, args, {"Authorization": f"Bearer {key}"})
            finally:
                stop_process(proxy)
    finally:
        stop_process(vllm)
    port = free_port()
    ours = start(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--engine",
            "vllm",
            "--model",
            str(args.model),
            "--served-model-name",
            MODEL,
            "--port",
            str(port),
            "--max-concurrency",
            str(max(args.concurrency)),
            *VLLM_FLAGS,
        ],
        logs / "gmai-vl.log",
        {**os.environ, "GMAIVL_LOG_LEVEL": "warning", "GMAIVL_QUEUE_MAX_DEPTH": "4096"},
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=600, process=ours)
        print("(b) gmai-vl gateway + queue + vLLM worker", flush=True)
        rows += measure("gmai-vl", f"http://127.0.0.1:{port}", args)
    finally:
        stop_process(ours)
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "| streams | server | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | ITL p99 ms | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r.concurrency, r.server)):
        lines.append(
            f"| {r.concurrency} | {r.server} | {r.rps:.1f} | {r.tokens_per_s:.0f} | "
            f"{r.ttft_p50_ms:.1f} | {r.ttft_p99_ms:.1f} | {r.itl_p50_ms:.2f} | "
            f"{r.itl_p99_ms:.2f} | {r.errors} |"
        )
    lines += [
        "",
        "| streams | server | throughput vs vllm | TTFT p50 vs vllm (ms) |",
        "| ---: | --- | ---: | ---: |",
    ]
    base = {r.concurrency: r for r in rows if r.server == "vllm"}
    for r in sorted(rows, key=lambda r: (r.concurrency, r.server)):
        if r.server == "vllm" or r.concurrency not in base:
            continue
        b = base[r.concurrency]
        lines.append(
            f"| {r.concurrency} | {r.server} | {r.tokens_per_s / b.tokens_per_s:.3f}x | "
            f"{r.ttft_p50_ms - b.ttft_p50_ms:+.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for server in ("vllm", "gmai-vl", "litellm"):
        mine = sorted((r for r in rows if r.server == server), key=lambda r: r.concurrency)
        if not mine:
            continue
        xs = [r.concurrency for r in mine]
        left.plot(xs, [r.tokens_per_s for r in mine], marker="o", label=server)
        right.plot(xs, [r.ttft_p50_ms for r in mine], marker="o", label=server)
    left.set(xlabel="concurrent streams", ylabel="output tokens/s", title="Throughput")
    right.set(xlabel="concurrent streams", ylabel="ms", title="TTFT p50")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--litellm", help="the `litellm` executable (its own venv)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_all(args, Path(tmp))
    print()
    print(report(rows, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vllm_front_doors.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    plot(rows, args.out / "vllm_front_doors.png")
    print(f"\nwrote {args.out}/vllm_front_doors.json and vllm_front_doors.png")


if __name__ == "__main__":
    main()
