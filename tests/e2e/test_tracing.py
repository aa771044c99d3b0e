"""Traces across processes: a client's traceparent through a gateway, Redis and a
worker (and vLLM's own spans), received by a real OTLP/HTTP endpoint in the test."""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

from service.otlp_receiver import OtlpReceiver, ReceivedSpan
from service.processes import MODEL, Cluster
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.e2e.test_pacs import MARKER, PHI_DICOM

GATEWAY_SPANS = {
    "POST /v1/chat/completions",
    "image.resolve",
    "image.decode",
    "queue.submit",
    "response",
}  # fmt: skip (tenant.admit: with keys only)
WORKER_SPANS = {"queue.wait", "worker.job", "engine.generate"}


def traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent}-01", trace_id, parent


def dicom_chat(max_tokens: int = 6) -> dict:
    url = "data:application/dicom;base64," + base64.b64encode(PHI_DICOM).decode()
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": f"Findings for {MARKER}?"},
                ],
            }
        ],
    }


def wait_for_spans(
    receiver: OtlpReceiver, trace_id: str, names: set[str], timeout: float = 30
) -> dict[str, ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = {s.name: s for s in receiver.trace(trace_id)}
        if names <= set(spans):
            return spans
        time.sleep(0.1)
    raise AssertionError(f"missing spans: {names - {s.name for s in receiver.trace(trace_id)}}")


@pytest.fixture
def traced(tmp_path):
    with OtlpReceiver() as receiver:
        cluster = Cluster(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
            GMAIVL_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
            GMAIVL_FAKE_TOKEN_INTERVAL="0.05",
        )
        try:
            yield cluster, receiver
        finally:
            cluster.close()


def test_one_trace_from_the_client_through_gateway_redis_and_worker(traced, tmp_path):
    cluster, receiver = traced
    cluster.add_worker()
    gateway = cluster.add_gateway()
    header, trace_id, client_span = traceparent()
    started = time.perf_counter()
    response = httpx.post(
        gateway + "/v1/chat/completions",
        json=dicom_chat(),
        headers={"traceparent": header, "X-Request-Id": "req-trace-1"},
        timeout=30,
    )
    latency = time.perf_counter() - started
    assert response.status_code == 200, response.text
    spans = wait_for_spans(receiver, trace_id, GATEWAY_SPANS | WORKER_SPANS)

    server = spans["POST /v1/chat/completions"]
    assert server.parent_span_id == client_span  # joined the client's trace
    assert {s.service for s in receiver.trace(trace_id)} == {"gmai-vl-gateway", "gmai-vl-worker"}
    by_id = {s.span_id: s.name for s in spans.values()}
    parent = {name: by_id.get(span.parent_span_id) for name, span in spans.items()}
    assert parent["queue.submit"] == parent["response"] == server.name
    assert parent["image.resolve"] == server.name and parent["image.decode"] == "image.resolve"
    # the job carried the context across Redis: the worker's spans hang under the enqueue
    assert parent["queue.wait"] == parent["worker.job"] == "queue.submit"
    assert parent["engine.generate"] == "worker.job"

    # every span names the request; durations agree with what the client measured
    assert all(s.attributes["gmaivl.request_id"] == "req-trace-1" for s in spans.values())
    assert server.seconds <= latency
    wait, generate = spans["queue.wait"].seconds, spans["engine.generate"].seconds
    assert wait + generate <= server.seconds
    assert generate >= 6 * 0.05 * 0.9  # 6 tokens at 50 ms from the fake engine
    engine = spans["engine.generate"]
    assert engine.attributes["gen_ai.usage.output_tokens"] == 6
    assert [name for name, _, _ in engine.events] == ["first_token"]
    assert engine.start_ns < engine.events[0][1] < engine.end_ns
    assert spans["queue.wait"].attributes["gmaivl.lane"] == "routine"
    assert spans["image.decode"].attributes["gmaivl.image.media_type"] == "application/dicom"

    # no PHI anywhere in the trace: not the patient's name, not the prompt
    dumped = json.dumps([s.__dict__ for s in receiver.trace(trace_id)], default=str)
    assert MARKER not in dumped
    # the audit event names the trace, and so do the logs
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["trace_id"] for e in audit if e["request_id"] == "req-trace-1"] == [trace_id]


def test_a_refused_request_is_traced_with_its_error_code_only(traced, tmp_path):
    """With keys on: the tenant's admission is a span too; the broken image fails its
    decode span by error type and code, without the exception's message."""
    cluster, receiver = traced
    keys = KeyFile(tenants={"radiology": TenantPolicy()})
    key = keys.create("radiology")
    keys.save(tmp_path / "keys.json")
    cluster.env.update(GMAIVL_AUTH="keys", GMAIVL_API_KEYS_FILE=str(tmp_path / "keys.json"))
    cluster.add_worker()
    gateway = cluster.add_gateway()
    header, trace_id, _ = traceparent()
    broken = "data:application/dicom;base64," + base64.b64encode(PHI_DICOM[:2000]).decode()
    body = dicom_chat()
    body["messages"][0]["content"][0]["image_url"]["url"] = broken
    response = httpx.post(
        gateway + "/v1/chat/completions",
        json=body,
        headers={"traceparent": header, "Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 422
    names = {"POST /v1/chat/completions", "tenant.admit", "image.decode"}
    spans = wait_for_spans(receiver, trace_id, names)
    assert spans["tenant.admit"].parent_span_id == spans["POST /v1/chat/completions"].span_id
    decode = spans["image.decode"]
    assert decode.attributes["error.type"] == "UnprocessableImage"
    assert decode.attributes["gmaivl.error_code"] == response.json()["error"]["code"]
    assert spans["POST /v1/chat/completions"].attributes["http.response.status_code"] == 422
    assert MARKER not in json.dumps([s.__dict__ for s in receiver.trace(trace_id)], default=str)


def test_vllms_own_spans_join_the_trace(traced, tiny_checkpoint: Path):
    from tests.e2e.test_vllm_serving import VLLM_FLAGS

    cluster, receiver = traced
    cluster.add_worker(engine=("vllm", "--model", str(tiny_checkpoint), *VLLM_FLAGS))
    gateway = cluster.add_gateway(ready_timeout=300)
    header, trace_id, _ = traceparent()
    body = dicom_chat(max_tokens=4)
    response = httpx.post(
        gateway + "/v1/chat/completions", json=body, headers={"traceparent": header}, timeout=60
    )
    assert response.status_code == 200, response.text
    spans = wait_for_spans(receiver, trace_id, WORKER_SPANS | {"llm_request"}, timeout=60)
    vllm_span = spans["llm_request"]
    assert vllm_span.parent_span_id == spans["engine.generate"].span_id
    assert MARKER not in json.dumps([s.__dict__ for s in receiver.trace(trace_id)], default=str)


def test_a_study_read_is_traced_like_a_chat_request(tmp_path, orthanc):
    """A read takes the chat's job path: its images are spans (fetch, decode), and the
    job carries the request's trace into the worker."""
    from tests.e2e.test_dicom_reads import make_study

    study = make_study()
    for data in study.files:
        orthanc.upload(data)
    with OtlpReceiver() as receiver:
        cluster = Cluster(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
            GMAIVL_PACS=json.dumps([orthanc.pacs_entry("main")]),
            GMAIVL_FAKE_TOKEN_INTERVAL="0.02",
        )
        try:
            cluster.add_worker()
            gateway = cluster.add_gateway()
            header, trace_id, _ = traceparent()
            body = {"model": MODEL, "study_instance_uid": study.uid, "max_tokens": 4}
            r = httpx.post(
                gateway + "/v1/dicom/reads", json=body, headers={"traceparent": header}, timeout=30
            )
            assert r.status_code == 202, r.text
            names = {"POST /v1/dicom/reads", "image.resolve", "image.fetch", "image.decode"}
            spans = wait_for_spans(receiver, trace_id, names | {"queue.submit"} | WORKER_SPANS)
            every = receiver.trace(trace_id)  # one image.* span per instance
        finally:
            cluster.close()
    by_id = {s.span_id: s.name for s in every}
    parent = {name: by_id.get(span.parent_span_id) for name, span in spans.items()}
    assert parent["image.fetch"] == parent["image.decode"] == "image.resolve"
    assert parent["queue.wait"] == parent["worker.job"] == "queue.submit"
    assert spans["image.resolve"].attributes["gmaivl.image.source"] == "dicomweb_instance"
    assert spans["image.decode"].attributes["gmaivl.image.media_type"] == "application/dicom"


def test_a_responses_request_is_traced_like_a_chat_request(traced):
    """/v1/responses goes through chat's own path: the same spans, the same parents,
    the job's context across Redis, no PHI."""
    cluster, receiver = traced
    cluster.add_worker()
    gateway = cluster.add_gateway()
    header, trace_id, client_span = traceparent()
    chat = dicom_chat()
    image, text = chat["messages"][0]["content"]
    body = {
        "model": MODEL,
        "max_output_tokens": 6,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": image["image_url"]["url"]},
                    {"type": "input_text", "text": text["text"]},
                ],
            }
        ],
    }
    response = httpx.post(
        gateway + "/v1/responses",
        json=body,
        headers={"traceparent": header, "X-Request-Id": "req-trace-responses"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    server_name = "POST /v1/responses"
    names = (GATEWAY_SPANS - {"POST /v1/chat/completions"}) | {server_name} | WORKER_SPANS
    spans = wait_for_spans(receiver, trace_id, names)
    server = spans[server_name]
    assert server.parent_span_id == client_span
    by_id = {s.span_id: s.name for s in spans.values()}
    parent = {name: by_id.get(span.parent_span_id) for name, span in spans.items()}
    assert parent["queue.submit"] == parent["response"] == parent["image.resolve"] == server_name
    assert parent["queue.wait"] == parent["worker.job"] == "queue.submit"
    assert parent["engine.generate"] == "worker.job"
    assert spans["engine.generate"].attributes["gen_ai.usage.output_tokens"] == 6
    assert all(s.attributes["gmaivl.request_id"] == "req-trace-responses" for s in spans.values())
    assert MARKER not in json.dumps([s.__dict__ for s in receiver.trace(trace_id)], default=str)
