"""200 requests across 2 gateways and 2 workers while a worker is killed (-9) and
Redis is restarted, or (Sentinel scenario) its primary is killed (-9) and a
replica promoted; prints what every request ended as and checks for leaks.

    python loadtest/chaos_distributed.py [--requests 200] [--concurrency 32]
                                         [--scenario restart|sentinel|all]

Scenarios: `restart` — one redis-server, stopped and started again empty;
`sentinel` — a primary, a replica and three Sentinels, the primary killed for
good (gateways and workers follow the Sentinels to the promoted replica).

The client behaves like the OpenAI SDK: it retries 429/503 answers that came
before any output (honouring Retry-After). A request ends as
- answered: the exact expected text;
- retriable stream error: a stream that had started and ended with a clean error
  event (worker_lost / not_ready), its text a prefix of the expected one;
- failed: anything else (garbled or duplicated text, 5xx, lost request).
After the run it waits for the result TTL and counts per-request keys (and gateway
inboxes) left in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.engines.fake import TOKENS  # noqa: E402
from service.processes import MODEL, Cluster, SentinelGroup  # noqa: E402

RESULT_TTL = 5


def expected(max_tokens: int) -> str:
    return "".join(TOKENS[i % len(TOKENS)] for i in range(max_tokens))


async def one(http: httpx.AsyncClient, gateway: str, i: int, stats: Counter) -> tuple[str, float]:
    max_tokens, stream = 10 + i % 21, i % 2 == 1
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"q{i}"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    started = time.perf_counter()
    for _attempt in range(30):
        try:
            if not stream:
                r = await http.post(gateway + "/v1/chat/completions", json=body)
                if r.status_code in (429, 503):
                    stats["client retries"] += 1
                    await asyncio.sleep(float(r.headers.get("retry-after", "0.5")))
                    continue
                ok = r.status_code == 200 and r.json()["choices"][0]["message"][
                    "content"
                ] == expected(max_tokens)
                return (
                    "answered" if ok else f"failed (HTTP {r.status_code})"
                ), time.perf_counter() - started
            async with http.stream("POST", gateway + "/v1/chat/completions", json=body) as response:
                if response.status_code in (429, 503):
                    stats["client retries"] += 1
                    await response.aread()
                    await asyncio.sleep(float(response.headers.get("retry-after", "0.5")))
                    continue
                text, error = "", None
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line.removeprefix("data: "))
                        if "error" in event:
                            error = event["error"]["code"]
                        elif event["choices"]:
                            text += event["choices"][0]["delta"].get("content") or ""
            elapsed = time.perf_counter() - started
            if error is None:
                return ("answered" if text == expected(max_tokens) else "failed (garbled)"), elapsed
            if error in ("worker_lost", "not_ready") and expected(max_tokens).startswith(text):
                return "retriable stream error", elapsed
            return f"failed ({error})", elapsed
        except httpx.TransportError:
            stats["client retries"] += 1
            await asyncio.sleep(0.5)
    return "failed (gave up)", time.perf_counter() - started


async def run(
    args: argparse.Namespace,
    cluster: Cluster,
    gateways: list[str],
    sentinels: SentinelGroup | None = None,
) -> bool:
    stats: Counter = Counter()
    outcomes: Counter = Counter()
    latencies: list[float] = []
    done = 0
    limit = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(timeout=120) as http:

        async def worker(i: int) -> None:
            nonlocal done
            async with limit:
                outcome, elapsed = await one(http, gateways[i % 2], i, stats)
            outcomes[outcome] += 1
            latencies.append(elapsed)
            done += 1

        async def chaos() -> None:
            while done < args.requests * 0.3:
                await asyncio.sleep(0.01)
            cluster.kill_worker(0)
            print(f"  killed worker 0 (-9) after {done} answers", flush=True)
            while done < args.requests * 0.6:
                await asyncio.sleep(0.01)
            if sentinels is not None:
                killed_at = time.perf_counter()
                old = sentinels.kill_primary().port
                print(f"  killed the Redis primary (-9) after {done} answers", flush=True)
                while sentinels.primary_port() == old:
                    await asyncio.sleep(0.05)
                print(
                    f"  Sentinels promoted the replica {time.perf_counter() - killed_at:.1f} s "
                    "after the kill",
                    flush=True,
                )
                return
            cluster.redis.stop()
            print(f"  stopped Redis after {done} answers", flush=True)
            await asyncio.sleep(1.0)
            cluster.redis.start()
            print("  restarted Redis (empty, same port)", flush=True)

        began = time.perf_counter()
        await asyncio.gather(chaos(), *(worker(i) for i in range(args.requests)))
        elapsed = time.perf_counter() - began
    p50 = statistics.median(latencies)
    print(f"\n{args.requests} requests in {elapsed:.1f} s, p50 {p50:.2f} s")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome:26s} {count}")
    print(f"  {'client retries (429/503)':26s} {stats['client retries']}")
    port = sentinels.primary_port() if sentinels is not None else cluster.redis.port
    client = redis.Redis(port=port)

    def per_request_keys() -> list[bytes]:
        return [
            k
            for k in client.scan_iter(match="gmaivl:*")
            if k.split(b":")[1] in (b"inbox", b"cancel", b"tries", b"img")
        ]

    # Late writes (events of a cancelled attempt after a failover) refresh a TTL, so
    # keys may outlive one TTL; a per-request key without a TTL is a leak.
    time.sleep(RESULT_TTL + 1)
    left = per_request_keys()
    leaked = [k for k in left if client.ttl(k) == -1]
    print(
        f"  {'per-request keys left':26s} {len(leaked)} without a TTL, "
        f"{len(left) - len(leaked)} still expiring (after the {RESULT_TTL} s TTL)"
    )
    failed = sum(c for o, c in outcomes.items() if o.startswith("failed"))
    print("\nOK" if failed == 0 and not leaked else "\nPROBLEMS FOUND")
    return failed == 0 and not leaked


def scenario(args: argparse.Namespace, name: str) -> bool:
    print(f"scenario {name}:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sentinels = SentinelGroup(Path(tmp)) if name == "sentinel" else None
        cluster = Cluster(
            Path(tmp),
            redis_url=sentinels.url if sentinels is not None else None,
            GMAIVL_FAKE_TOKEN_INTERVAL="0.02",
            GMAIVL_RESULT_TTL=str(RESULT_TTL),
        )
        try:
            cluster.add_worker(max_concurrency=16)
            cluster.add_worker(max_concurrency=16)
            gateways = [cluster.add_gateway(), cluster.add_gateway()]
            for _, url in cluster.workers:
                cluster.wait_worker_metrics(url)
            return asyncio.run(run(args, cluster, gateways, sentinels))
        finally:
            cluster.close()
            if sentinels is not None:
                sentinels.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scenario", choices=["restart", "sentinel", "all"], default="all")
    args = parser.parse_args()
    names = ["restart", "sentinel"] if args.scenario == "all" else [args.scenario]
    results = [scenario(args, name) for name in names]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
