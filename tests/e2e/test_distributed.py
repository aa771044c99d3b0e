"""Distributed mode with real processes: 2 gateways, 2 workers, a real redis-server.
Workers run the fake engine (a fixed token stream at a fixed pace) so that a kill
lands mid-generation deterministically; the real model behind Redis is covered by
test_redis_real_model below."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from service.engines.fake import TOKENS
from service.processes import MODEL, Cluster
from tests.conftest import image_message, png_data_url


def expected_text(max_tokens: int) -> str:
    return "".join(TOKENS[i % len(TOKENS)] for i in range(max_tokens))


@pytest.fixture
def cluster(tmp_path):
    made: list[Cluster] = []

    def make(**env: str) -> Cluster:
        made.append(Cluster(tmp_path, **env))
        return made[-1]

    yield make
    for c in made:
        c.close()


async def test_two_gateways_two_workers_answer_each_request_exactly_once(cluster):
    c = cluster()
    workers = [c.add_worker(), c.add_worker()]
    gateways = [c.add_gateway(), c.add_gateway()]
    for url in workers:
        c.wait_worker_metrics(url)
    clients = [openai.AsyncOpenAI(base_url=g + "/v1", api_key="x", max_retries=0) for g in gateways]

    async def one(i: int) -> tuple[str, str]:
        client = clients[i % 2]
        messages = (
            image_message(png_data_url(color=(i, 0, 0)))
            if i % 3 == 0
            else [{"role": "user", "content": f"question {i}"}]
        )
        max_tokens = 3 + i % 5
        priority = ("stat", "routine", "batch")[i % 3]
        if i % 2:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=max_tokens,
                stream=True,
                extra_headers={"X-Priority": priority},
            )
            chunks = [ch async for ch in stream]
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            return chunks[0].id, text
        r = await client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=max_tokens, extra_body={"priority": priority}
        )
        return r.id, r.choices[0].message.content

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert [text for _, text in results] == [expected_text(3 + i % 5) for i in range(50)]
    assert len({rid for rid, _ in results}) == 50
    # exactly once: the engines generated exactly the tokens that were asked for
    assert all(
        c.worker_metric(w, 'gmaivl_engine_aborts_total{reason="cancelled"}') == 0 for w in workers
    )
    generated = sum(
        c.worker_metric(w, 'gmaivl_completion_tokens_total{model="cluster"}') for w in workers
    )
    assert generated == sum(3 + i % 5 for i in range(50))
    assert all(
        c.worker_metric(w, 'gmaivl_completion_tokens_total{model="cluster"}') > 0 for w in workers
    ), "both workers should have taken work"
    for client in clients:
        await client.close()


async def test_kill_9_worker_mid_generation(cluster):
    c = cluster(GMAIVL_FAKE_TOKEN_INTERVAL="0.05")
    victim, survivor = c.add_worker(max_concurrency=4), c.add_worker(max_concurrency=4)
    gateway = c.add_gateway()
    c.wait_worker_metrics(victim)
    c.wait_worker_metrics(survivor)
    max_tokens = 40  # 2 s per answer
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
    }

    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:

        async def non_stream() -> str:
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        async def stream() -> tuple[str, dict | None]:
            text, error = "", None
            async with http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line.removeprefix("data: "))
                    if "error" in event:
                        error = event["error"]
                    elif event["choices"]:
                        text += event["choices"][0]["delta"].get("content") or ""
            return text, error

        tasks = [asyncio.create_task(non_stream()) for _ in range(4)]
        tasks += [asyncio.create_task(stream()) for _ in range(4)]
        deadline = time.monotonic() + 10
        while c.worker_metric(victim, 'gmaivl_queue_wait_seconds_count{lane="routine"}') < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # mid-generation
        c.kill_worker(0)
        results = await asyncio.gather(*tasks)

    for text in results[:4]:  # non-stream: retried transparently on the survivor
        assert text == expected_text(max_tokens)
    lost = 0
    for text, error in results[4:]:
        if error is None:
            assert text == expected_text(max_tokens)
        else:  # started on the victim: a clean retriable error, text never spliced
            lost += 1
            assert error["code"] == "worker_lost"
            assert expected_text(max_tokens).startswith(text)
    assert c.worker_metric(survivor, "gmaivl_redeliveries_total") >= 1
    assert lost <= 4


async def test_redis_restart_gives_503_then_recovers(cluster):
    c = cluster()
    c.add_worker()
    gateway = c.add_gateway()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        c.redis.stop()
        assert (await http.get("/health/ready")).status_code == 503
        down = await http.post("/v1/chat/completions", json=body)
        assert down.status_code == 503 and down.json()["error"]["code"] == "not_ready"
        c.redis.start()  # same port, empty: streams and groups are recreated
        deadline = time.monotonic() + 20
        while (await http.get("/health/ready")).status_code != 200:
            assert time.monotonic() < deadline, "gateway did not recover"
            await asyncio.sleep(0.1)
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.json()["choices"][0]["message"][
            "content"
        ] == expected_text(3)
    assert all(p.poll() is None for p, _ in c.gateways + c.workers), "no process crashed"


async def test_stat_overtakes_batch_and_batch_still_finishes(cluster):
    c = cluster(GMAIVL_FAKE_TOKEN_INTERVAL="0.02")
    c.add_worker(max_concurrency=1)
    gateway = c.add_gateway()
    finished: list[str] = []
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:

        async def call(name: str, lane: str) -> None:
            r = await http.post("/v1/chat/completions", json={**body, "priority": lane})
            assert r.status_code == 200
            finished.append(name)

        batch = [asyncio.create_task(call(f"batch{i}", "batch")) for i in range(20)]
        while (
            'gmaivl_queue_depth{lane="batch",model="cluster"} 1'
            not in (await http.get("/metrics")).text
            and len(finished) < 3
        ):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        stat = asyncio.create_task(call("stat", "stat"))
        await asyncio.gather(stat, *batch)
    assert finished.index("stat") <= 4, finished  # ahead of the ~16 batch jobs still waiting
    assert len(finished) == 21  # no starvation


async def test_disconnect_and_deadline_reach_the_worker_engine(cluster):
    c = cluster(GMAIVL_FAKE_TOKEN_INTERVAL="0.05")
    worker = c.add_worker()
    gateway = c.add_gateway()
    c.wait_worker_metrics(worker)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 400}
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:

        async def leave_early() -> None:
            async with http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as response:
                async for _ in response.aiter_lines():
                    await asyncio.sleep(30)

        series = 'gmaivl_engine_aborts_total{reason="%s"}'

        def aborts() -> float:
            return sum(c.worker_metric(worker, series % r) for r in ("cancelled", "deadline"))

        async def wait_for_aborts(n: int) -> None:
            deadline = time.monotonic() + 5
            while aborts() < n:
                assert time.monotonic() < deadline, "the abort did not reach the engine"
                await asyncio.sleep(0.05)

        task = asyncio.create_task(leave_early())
        await asyncio.sleep(0.5)
        task.cancel()
        await wait_for_aborts(1)  # the client left: the running job was aborted
        assert c.worker_metric(worker, series % "cancelled") == 1
        late = await http.post(
            "/v1/chat/completions", json=body, headers={"X-Request-Timeout": "1.0"}
        )
        assert late.status_code == 504
        # The deadline stops the running job: the worker's timer ("deadline") or the
        # gateway's cancel at the same instant ("cancelled") - either way it is aborted.
        await wait_for_aborts(2)


def test_serve_all_in_one_on_redis(tmp_path, redis_server):
    import subprocess
    import sys

    from service.processes import free_port, wait_ready

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--redis-url",
            redis_server.url,
            "--engine",
            "fake",
            "--served-model-name",
            "solo",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process=process)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        r = client.chat.completions.create(
            model="solo", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
        assert r.choices[0].message.content == expected_text(4)
        # log probabilities cross Redis (job and events) in both answer shapes
        asked = {"model": "solo", "max_tokens": 3, "logprobs": True, "top_logprobs": 2,
                 "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        content = client.chat.completions.create(**asked).choices[0].logprobs.content
        assert [(t.token, t.logprob, len(t.top_logprobs)) for t in content] == [
            ("The", -0.25, 2), (" image", -0.25, 2), (" shows", -0.25, 2)
        ]  # fmt: skip
        streamed = [
            t
            for c in client.chat.completions.create(**asked, stream=True)
            if c.choices and c.choices[0].logprobs
            for t in c.choices[0].logprobs.content
        ]
        assert [t.model_dump() for t in streamed] == [t.model_dump() for t in content]
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'gmaivl_live_workers{model="solo"} 1.0' in scrape  # gauges only Redis can answer
        assert 'gmaivl_queue_oldest_age_seconds{lane="stat",model="solo"} 0.0' in scrape
    finally:
        process.terminate()
        process.wait(timeout=10)
