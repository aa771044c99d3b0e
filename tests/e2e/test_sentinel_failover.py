"""Redis Sentinel with real processes: a primary, a replica and three Sentinels on
loopback; gateways and workers on the `redis+sentinel://` URL. The primary is
`kill -9`ed under load: every request is answered with its exact text, no
process restarts. Workers run the fake engine (known text at a known pace)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from service.core.lanes import Lane
from service.engines.fake import TOKENS
from service.processes import MODEL, Cluster, SentinelGroup
from service.redis import keys


def expected_text(max_tokens: int) -> str:
    return "".join(TOKENS[i % len(TOKENS)] for i in range(max_tokens))


@pytest.fixture
def made(tmp_path):
    parts: list[Cluster | SentinelGroup] = []
    yield parts
    for part in reversed(parts):
        part.close()


def body(i: int, max_tokens: int) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": max_tokens,
    }


async def ask(http: httpx.AsyncClient, payload: dict, retries: list[float]) -> httpx.Response:
    """Like a well-behaved client: a 503 with Retry-After is retried after it."""
    while True:
        r = await http.post("/v1/chat/completions", json=payload)
        if r.status_code != 503 or "Retry-After" not in r.headers:
            return r
        retries.append(time.monotonic())
        await asyncio.sleep(min(float(r.headers["Retry-After"]), 1.0))


# A gateway named its model (`--served-model-name`), or one that learns it from the
# workers' announcements: the registry lives in Redis too, and a model known before
# the primary died must stay known through the failover (503, retried; never 404).
GATEWAY_MODES = pytest.mark.parametrize("served", [MODEL, None], ids=["named", "discovery"])


@GATEWAY_MODES
async def test_primary_killed_under_load_nothing_lost(tmp_path, made, served):
    group = SentinelGroup(tmp_path)
    made.append(group)
    c = Cluster(tmp_path, redis_url=group.url, GMAIVL_FAKE_TOKEN_INTERVAL="0.02")
    made.append(c)
    workers = [c.add_worker(max_concurrency=8), c.add_worker(max_concurrency=8)]
    gateways = [c.add_gateway(model=served), c.add_gateway(model=served)]
    for url in workers:
        c.wait_worker_metrics(url)
    old_primary = group.primary_port()

    answers: dict[int, httpx.Response] = {}
    latencies: dict[int, float] = {}
    retries: list[float] = []
    gate = asyncio.Semaphore(16)
    killed_at: list[float] = []
    in_flight_at_kill: list[int] = []
    running: set[int] = set()

    async with (
        httpx.AsyncClient(base_url=gateways[0], timeout=60) as a,
        httpx.AsyncClient(base_url=gateways[1], timeout=60) as b,
    ):

        async def one(i: int) -> None:
            async with gate:
                running.add(i)
                started = time.monotonic()
                answers[i] = await ask((a, b)[i % 2], body(i, 10 + i % 7), retries)
                latencies[i] = time.monotonic() - started
                running.discard(i)
                if len(answers) == 20 and not killed_at:
                    in_flight_at_kill.extend(running)
                    killed_at.append(time.monotonic())
                    group.kill_primary()

        await asyncio.gather(*(one(i) for i in range(60)))

    assert killed_at, "the primary was killed"
    assert group.primary_port() != old_primary, "a replica was promoted"
    exact = sum(
        r.status_code == 200
        and r.json()["choices"][0]["message"]["content"] == expected_text(10 + i % 7)
        for i, r in answers.items()
    )
    mode = "named" if served else "discovery"
    print(f"\nfailover ({mode} gateways): answered with their exact text {exact} of 60")
    statuses = sorted(r.status_code for r in answers.values())
    assert exact == 60, f"every request answered with its exact text; statuses {statuses}"
    assert len({r.json()["id"] for r in answers.values()}) == 60, "no answer twice"
    assert all(p.poll() is None for p, _ in c.gateways + c.workers), "no process restarted"
    assert in_flight_at_kill, "requests were in flight when the primary died"
    # figures for docs/operations.md
    interrupted = max(latencies[i] for i in in_flight_at_kill)
    refused = (max(retries) - killed_at[0]) if retries else 0.0
    print(
        f"failover ({mode} gateways): in-flight requests at the kill {len(in_flight_at_kill)}, "
        f"their longest latency {interrupted:.2f} s; 503 retries {len(retries)}, "
        f"last 503 {refused:.2f} s after the kill"
    )
    assert interrupted < 30


BUSY_TOKENS = 120  # at 50 ms: the only slot is busy long enough to see the next job wait


@GATEWAY_MODES
async def test_job_lost_with_the_old_primary_is_resubmitted(tmp_path, made, served):
    """Asynchronous replication can lose an acknowledged enqueue. Made exact here: the
    replica is writable, and the queued job's entry is deleted on it alone before
    the primary is killed, so the promoted replica never had it."""
    group = SentinelGroup(tmp_path, replica_args=("--replica-read-only", "no"))
    made.append(group)
    c = Cluster(tmp_path, redis_url=group.url, GMAIVL_FAKE_TOKEN_INTERVAL="0.05")
    made.append(c)
    c.wait_worker_metrics(c.add_worker(max_concurrency=1))
    gateway = c.add_gateway(model=served)
    primary = redis.Redis(port=group.primary_port())
    replica = redis.Redis(port=group.replicas[0].port)
    stream = keys.lane_stream(MODEL, Lane.routine)

    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:
        busy = asyncio.create_task(ask(http, body(0, BUSY_TOKENS), []))  # 6 s on the only slot

        async def until(condition: Callable[[], bool]) -> None:
            """Polls the primary (the truth), not the replica (it may lag)."""
            deadline = time.monotonic() + 60
            while not condition():
                if time.monotonic() > deadline:
                    raise AssertionError(
                        _why_not_replicated(tmp_path, group, stream, busy, *queued)
                    )
                await asyncio.sleep(0.05)

        queued: list[asyncio.Task] = []
        await until(lambda: _running(primary, stream) == 1)
        queued.append(asyncio.create_task(ask(http, body(1, 5), [])))
        await until(lambda: primary.xlen(stream) == 2)  # and the second waiting behind it
        assert primary.wait(1, 10_000) == 1  # the replica has both
        entries = replica.xrange(stream)
        assert len(entries) == 2, _why_not_replicated(tmp_path, group, stream, busy, *queued)
        lost_id = entries[-1][0]
        replica.xdel(stream, lost_id)  # on the replica only: the enqueue the failover loses
        group.kill_primary()
        retries: list[float] = []
        first, second = await asyncio.gather(busy, *queued)
        late = await ask(http, body(2, 4), retries)

    assert group.primary_port() == group.replicas[0].port
    assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
    assert first.json()["choices"][0]["message"]["content"] == expected_text(BUSY_TOKENS)
    assert second.json()["choices"][0]["message"]["content"] == expected_text(5)
    assert late.status_code == 200
    assert all(p.poll() is None for p, _ in c.gateways + c.workers)


def _running(server: redis.Redis, stream: str) -> int:
    """Entries of `stream` delivered to a worker and not yet acknowledged."""
    try:
        return server.xpending(stream, keys.GROUP)["pending"]
    except redis.ResponseError:  # no group yet
        return 0


def _why_not_replicated(tmp_path, group, stream, *requests: asyncio.Task) -> str:
    """What a failed replication check saw: the requests' outcomes, both servers' view
    of the lane, the replica's link and the processes' last log lines."""
    primary = redis.Redis(port=group.primary_port())
    replica = redis.Redis(port=group.replicas[0].port)
    outcomes = [
        (r.result().status_code, r.result().text[:200]) if r.done() else "pending" for r in requests
    ]
    logs = {path.name: path.read_text(errors="replace")[-1500:] for path in tmp_path.glob("*.log")}
    link = replica.info("replication").get("master_link_status")
    return (
        f"both jobs replicated: requests {outcomes}; primary xlen {primary.xlen(stream)}, "
        f"replica xlen {replica.xlen(stream)}, link {link}; logs {logs}"
    )


async def test_a_started_stream_ends_with_the_retriable_error(tmp_path, made):
    group = SentinelGroup(tmp_path)
    made.append(group)
    c = Cluster(tmp_path, redis_url=group.url, GMAIVL_FAKE_TOKEN_INTERVAL="0.05")
    made.append(c)
    c.wait_worker_metrics(c.add_worker(max_concurrency=2))
    gateway = c.add_gateway()
    text, error, killed = "", None, False
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json={**body(0, 80), "stream": True}) as r,
    ):
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                error = event["error"]["code"]
            elif event["choices"]:
                text += event["choices"][0]["delta"].get("content") or ""
                if text and not killed:
                    killed = True
                    group.kill_primary()
    assert killed and error == "worker_lost"
    assert expected_text(80).startswith(text)  # never two attempts spliced
    assert all(p.poll() is None for p, _ in c.gateways + c.workers)
