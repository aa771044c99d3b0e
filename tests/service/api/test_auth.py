"""Keys and tenant policy through a real gateway (embedded, fake engine), with the
official openai SDK as the client where one would use it."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from service.config import Settings
from service.core.lanes import Lane
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.security.keys import KeyFile, key_id_of
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer, image_message, png_data_url

MODEL = "fake"


@dataclass
class Gateway:
    url: str
    keys_path: Path
    audit_path: Path
    keys: dict[str, str]  # tenant -> key

    def client(self, tenant: str, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=self.keys[tenant], max_retries=0, **kwargs
        )

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("auth")
    keys_path, audit_path = tmp / "keys.json", tmp / "audit.jsonl"
    keys = KeyFile(
        tenants={
            "radiology": TenantPolicy(max_images_per_request=2),
            "limited": TenantPolicy(requests_per_minute=3),
            "capped": TenantPolicy(max_priority=Lane.routine),
            "elsewhere": TenantPolicy(models=("another-model",)),
        }
    )
    made = {tenant: keys.create(tenant) for tenant in keys.tenants}
    made["revoked"] = keys.create("radiology", name="to be revoked")
    keys.save(keys_path)
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        host="0.0.0.0",  # what a deployment binds; the test server itself listens on loopback
        api_keys_file=keys_path,
        api_keys_reload_interval=0,
        audit_log=str(audit_path),
    )
    service = build_embedded(settings, FakeEngine(token_interval=0))
    with ThreadedServer(service.app) as server:
        yield Gateway(server.base_url, keys_path, audit_path, made)


def chat(**overrides) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            **overrides}  # fmt: skip


def post(gateway: Gateway, body: dict, key: str | None = None, **headers) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers)


def test_a_valid_key_works_through_the_openai_sdk(gateway):
    client = gateway.client("radiology")
    answer = client.chat.completions.create(
        model=MODEL, messages=image_message(png_data_url()), max_tokens=3
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert [m.id for m in client.models.list()] == [MODEL]


def test_missing_and_malformed_keys_are_401(gateway):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}):
        r = httpx.post(gateway.url + "/v1/chat/completions", json=chat(), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(gateway.url + "/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0).models.list()


def test_probes_scrapes_and_the_schema_need_no_key(gateway):
    for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json"):
        assert httpx.get(gateway.url + path).status_code == 200, path


def test_a_revoked_key_stops_working_without_a_restart(gateway):
    key = gateway.keys["revoked"]
    assert post(gateway, chat(), key).status_code == 200
    keys = KeyFile.load(gateway.keys_path)
    keys.revoke(key_id_of(key))
    keys.save(gateway.keys_path)
    r = post(gateway, chat(), key)
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"


def test_a_tenant_not_allowed_the_model_neither_sees_nor_uses_it(gateway):
    client = gateway.client("elsewhere")
    assert list(client.models.list()) == []
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model=MODEL, messages=chat()["messages"], max_tokens=2)
    assert info.value.body["code"] == "model_not_allowed"


def test_a_tenant_capped_at_a_lane_gets_403_above_it(gateway):
    key = gateway.keys["capped"]
    assert post(gateway, chat(priority="routine"), key).status_code == 200
    r = post(gateway, chat(priority="stat"), key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "priority_not_allowed"
    r = post(gateway, chat(), key, **{"X-Priority": "urgent"})
    assert r.status_code == 403


def test_a_tenant_image_cap_is_400(gateway):
    three = [{"type": "image_url", "image_url": {"url": png_data_url()}}] * 3
    r = post(gateway, chat(messages=[{"role": "user", "content": three}]),
             gateway.keys["radiology"])  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_images"
    assert "tenant" in r.json()["error"]["message"]


def test_over_the_rate_is_429_naming_the_limit_and_counted_by_tenant(gateway):
    client = gateway.client("limited")
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=chat()["messages"], max_tokens=2)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=chat()["messages"], max_tokens=2)
    assert info.value.body["code"] == "tenant_requests_per_minute"
    assert "3 requests per minute" in info.value.body["message"]
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60
    # Another tenant is not starved by this one.
    assert post(gateway, chat(), gateway.keys["radiology"]).status_code == 200
    metrics = httpx.get(gateway.url + "/metrics").text
    assert (
        'gmaivl_tenant_rejections_total{reason="tenant_requests_per_minute",tenant="limited"} 1.0'
        in metrics
    )


def test_every_request_is_audited_with_key_id_and_tenant_never_the_key(gateway):
    key = gateway.keys["radiology"]
    post(gateway, chat(), key, **{"X-Request-Id": "audit-allowed"})
    post(gateway, chat(), "gmai-000000000000-" + "A" * 43, **{"X-Request-Id": "audit-refused"})
    events = {e["request_id"]: e for e in gateway.audit()}
    allowed, refused = events["audit-allowed"], events["audit-refused"]
    assert (allowed["tenant"], allowed["key_id"], allowed["status"]) == (
        "radiology",
        key_id_of(key),
        200,
    )
    assert allowed["route"] == "/v1/chat/completions" and allowed["model"] == MODEL
    assert allowed["latency_ms"] > 0
    assert (refused["tenant"], refused["key_id"], refused["status"]) == (None, None, 401)
    assert refused["outcome"] == "invalid_api_key"
    text = gateway.audit_path.read_text()
    assert all(k.split("-", 2)[2] not in text for k in gateway.keys.values())


def test_wrong_keys_take_as_long_whatever_their_length(gateway):
    """Over HTTP: medians of 150 interleaved tries each. Whatever the key, a refusal is
    a dict lookup and one digest compare (µs); HTTP round trips on this shared machine
    take ~1 ms and jitter by more. Tolerance: 25% of the median, at least 0.5 ms. A
    length-dependent path (a database lookup, a slow hash of the key, an early exit
    before hashing) would show as a whole multiple of that."""
    known = gateway.keys["radiology"]
    keys = {
        "short": "x",
        "long": "y" * 4000,
        "known id": known[:-4] + "zzzz",
    }
    samples: dict[str, list[float]] = {name: [] for name in keys}
    names = list(keys)
    with httpx.Client(base_url=gateway.url) as client:
        for round_ in range(150):
            # Rotate the order: the first request of a round pays for the pause before it.
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                key = keys[name]
                started = time.perf_counter()
                r = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
                samples[name].append(time.perf_counter() - started)
                assert r.status_code == 401
    medians = {name: statistics.median(v) for name, v in samples.items()}
    spread = max(medians.values()) - min(medians.values())
    assert spread < max(0.0005, 0.25 * min(medians.values())), medians


def test_a_job_carries_its_callers_tenant(tmp_path):
    keys = KeyFile(tenants={"cardiology": TenantPolicy()})
    key = keys.create("cardiology")
    keys.save(tmp_path / "keys.json")
    settings = Settings(
        engine="fake", served_model_name=MODEL, api_keys_file=tmp_path / "keys.json"
    )
    service = build_embedded(settings, FakeEngine(token_interval=0))
    submitted = []
    submit = service.queue.submit

    async def recording_submit(job):
        submitted.append(job)
        await submit(job)

    service.queue.submit = recording_submit
    with ThreadedServer(service.app) as server:
        response = httpx.post(
            server.base_url + "/v1/chat/completions",
            json=chat(),
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 200
    assert [job.tenant for job in submitted] == ["cardiology"]
