"""Capacity run: a stack under stepped open-loop load until well past saturation.

Two stacks, each on loopback with the package's FakeEngine (a fixed token pace,
so capacity is known and the gateway/queue path is what is measured):

- `embedded`: `gmai-vl serve` (gateway + in-process queue + worker, one process)
- `redis`: redis-server + `gmai-vl gateway` + `gmai-vl worker` processes

Nominal capacity = max_concurrency / (max_tokens x token interval). Offered load
steps from 0.25x to 2.5x of it, Poisson arrivals (open loop: arrivals do not wait
for answers, as real clients don't), each step for --seconds. Every request
carries a PNG image and runs on the `routine` lane. Per step: throughput of 200s,
429 share, latency percentiles of admitted (200) requests, and the bound an
admitted request's latency must stay under: (queue depth + concurrency) /
capacity + service time.

    python loadtest/capacity.py [--seconds 8] [--stacks embedded redis]

Writes docs/benchmarks/capacity.json and capacity.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from loadtest.run import local_stack
from loadtest.traffic import TestImage, chat_body, data_url, png_bytes
from service.processes import Cluster

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
LOAD_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5)


@dataclass(frozen=True)
class Profile:
    concurrency: int = 4
    max_tokens: int = 16
    token_interval: float = 0.05
    queue_depth: int = 16

    @property
    def service_time(self) -> float:
        return self.max_tokens * self.token_interval

    @property
    def capacity(self) -> float:
        return self.concurrency / self.service_time

    @property
    def latency_bound(self) -> float:
        """Worst wait of an admitted request: everything ahead of it drains first."""
        return (self.queue_depth + self.concurrency) / self.capacity + self.service_time

    def env(self) -> dict[str, str]:
        return {
            "GMAIVL_FAKE_TOKEN_INTERVAL": str(self.token_interval),
            "GMAIVL_MAX_CONCURRENCY": str(self.concurrency),
            "GMAIVL_QUEUE_MAX_DEPTH": str(self.queue_depth),
        }


@dataclass
class Step:
    stack: str
    factor: float
    offered_rps: float
    sent: int
    ok: int
    refused: int
    other: int
    throughput_rps: float
    p50: float
    p95: float
    p99: float
    max: float
    latency_bound: float


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Small on purpose: the engine's pace, not image decoding on a shared 2-core
# machine, should be what saturates (bench_dicom.py measures decoding).
IMAGE = TestImage("grey.png", data_url(png_bytes(np.full((64, 64), 90, np.uint8)), "image/png"))


async def offered_load(
    base_url: str, model: str, rate: float, seconds: float, profile: Profile
) -> list[tuple[int, float, float]]:
    """Poisson arrivals at `rate`/s for `seconds`; (status, sent at, latency) per request."""
    body = chat_body(model, IMAGE, max_tokens=profile.max_tokens, rng=random.Random(0))
    results: list[tuple[int, float, float]] = []
    rng = random.Random(1)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def one(sent_at: float) -> None:
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/chat/completions", json=body, headers={"X-Priority": "routine"}
                )
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            results.append((status, sent_at, time.perf_counter() - started))

        tasks = []
        start = time.perf_counter()
        next_at = 0.0
        while next_at < seconds:
            delay = start + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(next_at)))
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    return results


def measure_step(
    stack: str, base_url: str, model: str, factor: float, seconds: float, profile: Profile
) -> Step:
    rate = factor * profile.capacity
    results = asyncio.run(offered_load(base_url, model, rate, seconds, profile))
    admitted = [latency for status, _, latency in results if status == 200]
    refused = sum(1 for status, _, _ in results if status == 429)
    # Throughput: answers completed inside the arrival window, after the first could
    # have (the ramp-up and the tail after the last arrival are not steady state).
    first = profile.service_time
    done = sum(1 for s, at, lat in results if s == 200 and first < at + lat <= seconds)
    return Step(
        stack=stack,
        factor=factor,
        offered_rps=rate,
        sent=len(results),
        ok=len(admitted),
        refused=refused,
        other=len(results) - len(admitted) - refused,
        throughput_rps=done / (seconds - first),
        p50=pct(admitted, 0.5),
        p95=pct(admitted, 0.95),
        p99=pct(admitted, 0.99),
        max=max(admitted, default=float("nan")),
        latency_bound=profile.latency_bound,
    )


@contextlib.contextmanager
def start_stack(stack: str, profile: Profile) -> Iterator[str]:
    if stack == "embedded":
        with local_stack("fake", profile.env()) as base_url:
            yield base_url
        return
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), **profile.env())
        try:
            cluster.add_worker(max_concurrency=profile.concurrency)
            yield cluster.add_gateway()
        finally:
            cluster.close()


def run(stacks: list[str], seconds: float, profile: Profile) -> list[Step]:
    steps: list[Step] = []
    with tqdm(total=len(stacks) * len(LOAD_FACTORS), desc="capacity", unit="step") as bar:
        for stack in stacks:
            with start_stack(stack, profile) as base_url:
                model = httpx.get(base_url + "/v1/models").json()["data"][0]["id"]
                for factor in LOAD_FACTORS:
                    bar.set_postfix(stack=stack, load=f"{factor}x")
                    steps.append(measure_step(stack, base_url, model, factor, seconds, profile))
                    time.sleep(profile.latency_bound)  # the queue drains before the next step
                    bar.update()
    return steps


def plot(steps: list[Step], profile: Profile, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, stack in enumerate(dict.fromkeys(s.stack for s in steps)):
        colour = f"C{i}"
        rows = [s for s in steps if s.stack == stack]
        x = [s.offered_rps for s in rows]
        axes[0].plot(x, [s.throughput_rps for s in rows], "o-", color=colour, label=stack)
        axes[1].plot(x, [s.p50 for s in rows], "o-", color=colour, label=f"{stack} p50")
        axes[1].plot(x, [s.p99 for s in rows], "s--", color=colour, label=f"{stack} p99")
        refused = [100 * s.refused / max(1, s.sent) for s in rows]
        axes[2].plot(x, refused, "o-", color=colour, label=stack)
    top = max(s.offered_rps for s in steps)
    axes[0].plot([0, top], [0, top], ":", color="grey", label="offered")
    axes[0].axhline(profile.capacity, color="red", lw=0.8, label="nominal capacity")
    axes[1].axhline(profile.latency_bound, color="red", lw=0.8, label="admitted-latency bound")
    titles = ("Throughput (200/s)", "Latency of admitted requests (s)", "Refused with 429 (%)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("offered load (requests/s)")
        ax.axvline(profile.capacity, color="red", lw=0.5, ls=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Capacity: FakeEngine {profile.concurrency} slots x {profile.max_tokens} tokens "
        f"@ {profile.token_interval * 1000:.0f} ms, queue depth {profile.queue_depth}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(steps: list[Step]) -> str:
    lines = [
        "| stack | load | offered/s | 200/s | 429 % | other | p50 s | p95 s | p99 s | max s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in steps:
        lines.append(
            f"| {s.stack} | {s.factor}x | {s.offered_rps:.1f} | {s.throughput_rps:.1f} | "
            f"{100 * s.refused / max(1, s.sent):.0f} | {s.other} | {s.p50:.2f} | {s.p95:.2f} | "
            f"{s.p99:.2f} | {s.max:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each step")
    parser.add_argument("--stacks", nargs="+", default=["embedded", "redis"])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    profile = Profile()
    steps = run(args.stacks, args.seconds, profile)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capacity.json").write_text(
        json.dumps({"profile": asdict(profile), "steps": [asdict(s) for s in steps]}, indent=2)
    )
    plot(steps, profile, args.out / "capacity.png")
    print(f"nominal capacity {profile.capacity:.1f}/s, bound {profile.latency_bound:.2f} s")
    print(table(steps))


if __name__ == "__main__":
    main()
