"""The gateway's request path, over real HTTP with the official openai SDK, with the
fake engine so pacing, queueing and cancellation are under the test's control.
The same API against the real model: tests/e2e and test_bad_inputs.py."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from service.config import Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from tests.conftest import ThreadedServer, image_message, png_data_url


def start(engine: FakeEngine, **settings) -> tuple[ThreadedServer, object]:
    service = build_embedded(Settings(engine="fake", served_model_name="fake", **settings), engine)
    return ThreadedServer(service.app), service


@pytest.fixture(scope="module")
def fast():
    engine = FakeEngine()
    server, service = start(engine)
    with server:
        yield server, service, engine


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_non_stream_completion_with_image(fast):
    server, _, _ = fast
    r = client(server).chat.completions.create(
        model="fake", messages=image_message(png_data_url()), max_tokens=3
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "The image shows"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3 and r.usage.total_tokens == r.usage.prompt_tokens + 3


def test_stream_with_usage_and_done(fast):
    server, _, _ = fast
    chunks = list(
        client(server).chat.completions.create(
            model="fake",
            messages=[{"role": "user", "content": "hi"}],
            max_completion_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The image shows no"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    with httpx.stream(
        "POST",
        server.base_url + "/v1/chat/completions",
        json={
            "model": "fake",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
            "stream": True,
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"


async def test_async_client_stream_and_stop(fast):
    server, _, _ = fast
    aclient = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    r = await aclient.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=20, stop=["no"]
    )
    assert r.choices[0].finish_reason == "stop"
    stream = await aclient.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "The image"
    await aclient.close()


def test_request_id_is_echoed_or_made(fast):
    server, _, _ = fast
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    url = server.base_url + "/v1/chat/completions"
    assert (
        httpx.post(url, json=body, headers={"X-Request-Id": "pacs-42"}).headers["x-request-id"]
        == "pacs-42"
    )
    made = httpx.post(url, json=body, headers={"X-Request-Id": "bad id\twith spaces"})
    assert len(made.headers["x-request-id"]) == 32
    assert httpx.get(server.base_url + "/nope").headers["x-request-id"]


async def test_clients_reusing_a_request_id_do_not_collide(fast):
    server, _, _ = fast
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        responses = await asyncio.gather(
            *(
                http.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "same"})
                for _ in range(8)
            )
        )
    assert [r.status_code for r in responses] == [200] * 8
    assert {r.headers["x-request-id"] for r in responses} == {"same"}
    assert len({r.json()["id"] for r in responses}) == 8
    assert all(r.json()["usage"]["completion_tokens"] == 5 for r in responses)


def test_models_routes(fast):
    server, _, _ = fast
    assert [m.id for m in client(server).models.list()] == ["fake"]
    assert client(server).models.retrieve("fake").id == "fake"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-4")


def test_health_and_metrics(fast):
    server, _, _ = fast
    assert httpx.get(server.base_url + "/health/live").json() == {"status": "ok"}
    ready = httpx.get(server.base_url + "/health/ready").json()
    assert ready["status"] == "ready" and all(ready["checks"].values())
    client(server).chat.completions.create(
        model="fake", messages=image_message(png_data_url()), max_tokens=2
    )
    metrics = httpx.get(server.base_url + "/metrics").text
    for series in (
        "gmaivl_requests_total",
        "gmaivl_request_duration_seconds_bucket",
        "gmaivl_time_to_first_token_seconds_bucket",
        "gmaivl_queue_depth",
        "gmaivl_queue_wait_seconds_bucket",
        "gmaivl_prompt_tokens_total",
        "gmaivl_completion_tokens_total",
        "gmaivl_image_preprocess_seconds_bucket",
        "gmaivl_in_flight_requests",
    ):
        assert series in metrics, series
    # No `_created` series (one per counter and histogram child), and no NaN anywhere.
    assert "_created" not in metrics
    assert "NaN" not in metrics and "Inf " not in metrics.replace('le="+Inf"', "")
    httpx.get(server.base_url + "/v1/not-a-route-" + "x" * 40)
    metrics = httpx.get(server.base_url + "/metrics").text
    assert "not-a-route" not in metrics and 'route="other"' in metrics
    assert 'lane="stat"' in metrics


def test_priority_field_and_header_are_validated(fast):
    server, _, _ = fast
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    url = server.base_url + "/v1/chat/completions"
    bad = httpx.post(url, json=body, headers={"X-Priority": "vip"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Priority"
    bad = httpx.post(url, json={**body, "priority": "vip"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "priority"


@pytest.mark.parametrize(
    ("first", "second", "runs_first"),
    [
        # (body priority, X-Priority) of two queued requests; which one the lane puts first
        (("batch", None), ("stat", None), "second"),  # the body field picks the lane
        ((None, "batch"), (None, "URGENT"), "second"),  # the header, any case
        (("batch", "stat"), (None, None), "second"),  # the body wins over the header
        ((None, "stat"), ("routine", None), "first"),  # a header alone still counts
    ],
)
async def test_queued_requests_run_in_lane_order(first, second, runs_first):
    """With the engine busy, two requests wait; the higher lane runs first, whatever
    order they came in. A server that ignored lanes (FIFO) fails the 'second' cases,
    one that let the header win fails the third."""
    engine = FakeEngine(token_interval=0.02, max_concurrency=1)
    server, _ = start(engine)
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

    def request(priority: str | None, header: str | None) -> tuple[dict, dict]:
        return ({**body, "priority": priority} if priority else body), (
            {"X-Priority": header} if header else {}
        )

    with server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            blocker = asyncio.create_task(
                http.post("/v1/chat/completions", json={**body, "max_tokens": 50})
            )
            while not engine.running:
                await asyncio.sleep(0.01)
            tasks = []
            for depth, (priority, header) in enumerate((first, second), start=1):
                json_body, headers = request(priority, header)
                tasks.append(
                    asyncio.create_task(
                        http.post("/v1/chat/completions", json=json_body, headers=headers)
                    )
                )
                while await _queued(http) < depth:
                    await asyncio.sleep(0.01)
            answers = [await task for task in tasks]
            assert (await blocker).status_code == 200
    assert all(a.status_code == 200 for a in answers)
    ids = [a.json()["id"].removeprefix("chatcmpl-") for a in answers]
    order = [rid for rid in engine.started if rid in ids]
    expected = ids if runs_first == "first" else ids[::-1]
    assert order == expected


async def _queued(http: httpx.AsyncClient) -> float:
    """Requests waiting in all lanes, from /metrics."""
    text = (await http.get("/metrics")).text
    lines = (line for line in text.splitlines() if line.startswith("gmaivl_queue_depth{"))
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


async def test_full_queue_is_429_with_retry_after():
    engine = FakeEngine(token_interval=0.05, max_concurrency=1)
    server, _ = start(engine, queue_max_depth=1)
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
    with server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            running = asyncio.create_task(http.post("/v1/chat/completions", json=body))
            while not engine.running:
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(http.post("/v1/chat/completions", json=body))
            while (await http.get("/metrics")).text.find(
                'gmaivl_queue_depth{lane="routine",model="fake"} 1.0'
            ) < 0:
                await asyncio.sleep(0.01)
            refused = await http.post("/v1/chat/completions", json=body)
            assert refused.status_code == 429
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            other_lane = asyncio.create_task(
                http.post("/v1/chat/completions", json={**body, "priority": "stat"})
            )
            assert (await running).status_code == 200
            assert (await queued).status_code == 200
            assert (await other_lane).status_code == 200
            metrics = (await http.get("/metrics")).text
            assert 'gmaivl_rejections_total{reason="queue_full"} 1.0' in metrics


async def test_deadline_in_queue_is_504_and_job_never_runs():
    engine = FakeEngine(token_interval=0.05, max_concurrency=1)
    server, _ = start(engine)
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    with server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            busy = asyncio.create_task(http.post("/v1/chat/completions", json=body))
            while not engine.running:
                await asyncio.sleep(0.01)
            late = await http.post(
                "/v1/chat/completions",
                json=body,
                headers={"X-Request-Timeout": "0.2", "X-Request-Id": "late"},
            )
            assert late.status_code == 504
            assert late.json()["error"]["code"] == "deadline_exceeded"
            assert (await busy).status_code == 200
            assert engine.aborted == []  # the late job never reached the engine
            bad = await http.post(
                "/v1/chat/completions", json=body, headers={"X-Request-Timeout": "soon"}
            )
            assert bad.status_code == 400


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_stops_the_engine(stream):
    engine = FakeEngine(token_interval=0.01, max_concurrency=1)
    server, _ = start(engine)
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4000,
        "stream": stream,
    }
    with server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:

            async def call():
                async with http.stream(
                    "POST",
                    "/v1/chat/completions",
                    json=body,
                    headers={"X-Request-Id": f"gone-{stream}"},
                ) as response:
                    async for _ in response.aiter_lines():
                        pass

            task = asyncio.create_task(call())
            while not engine.running:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()  # drops the connection
            started = time.monotonic()
            while engine.running and time.monotonic() - started < 2:
                await asyncio.sleep(0.01)
            assert engine.running == set(), "engine still generating after the client left"
            assert len(engine.aborted) == 1
            assert engine.tokens_emitted < 1000
            # the slot is free: the next request runs at once
            r = await http.post(
                "/v1/chat/completions", json={**body, "max_tokens": 2, "stream": False}
            )
            assert r.status_code == 200


async def test_deadline_mid_stream_ends_with_an_error_event():
    engine = FakeEngine(token_interval=0.02)
    server, _ = start(engine)
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 500,
        "stream": True,
    }
    with server:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
            http.stream(
                "POST", "/v1/chat/completions", json=body, headers={"X-Request-Timeout": "0.3"}
            ) as response,
        ):
            assert response.status_code == 200  # headers went out with the first token
            events = [line async for line in response.aiter_lines() if line]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["code"] == "deadline_exceeded"
    contents = [json.loads(e.removeprefix("data: ")) for e in events[1:-2]]
    assert contents and all(c["choices"][0]["delta"]["content"] for c in contents)
    assert len(contents) < 30  # about 15 tokens fit in 0.3 s; far from 500


def test_openapi_documents_the_chat_request(fast):
    server, _, _ = fast
    schema = httpx.get(server.base_url + "/openapi.json").json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][ref]["properties"]
    assert {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "priority",
    } <= set(properties)


def test_logprobs_through_the_openai_sdk_stream_and_non_stream(fast):
    """OpenAI's shape: choices[].logprobs.content[] with token, logprob, bytes and
    top_logprobs; in a stream, on each content chunk. The fake engine's values are
    fixed (engines/fake.py), so every field is checked."""
    server, _, _ = fast
    sdk = client(server)
    kwargs = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
              "logprobs": True, "top_logprobs": 2}  # fmt: skip
    answer = sdk.chat.completions.create(**kwargs)
    content = answer.choices[0].logprobs.content
    assert [t.token for t in content] == ["The", " image", " shows"]
    assert content[1].logprob == -0.25 and content[1].bytes == list(b" image")
    top = [(t.token, t.logprob) for t in content[1].top_logprobs]
    assert top == [(" image", -0.25), (" shows", -1.0)]
    chunks = list(sdk.chat.completions.create(**kwargs, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in
                c.choices[0].logprobs.content]  # fmt: skip
    assert [t.model_dump() for t in streamed] == [t.model_dump() for t in content]
    plain = sdk.chat.completions.create(**{**kwargs, "logprobs": False, "top_logprobs": None})
    assert plain.choices[0].logprobs is None
