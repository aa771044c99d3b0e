"""The audit sink and the middleware that writes one event per audited request."""

from __future__ import annotations

import hashlib
import io
import json

import httpx

from service.audit import AuditEvent, JsonLinesAuditSink, hash_uid, open_audit_sink
from service.config import Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from tests.conftest import ThreadedServer, image_message, png_data_url


def test_event_is_one_json_line_with_a_hashed_uid():
    stream = io.StringIO()
    sink = JsonLinesAuditSink(stream, owned=False)
    event = AuditEvent(request_id="r1", route="/v1/chat/completions", model="m")
    event.note_sop_instance_uid("1.2.3.4")
    sink.write(event)
    sink.write(AuditEvent(request_id="r2", route="/v1/chat/completions"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["sop_instance_uid_sha256"] == [hashlib.sha256(b"1.2.3.4").hexdigest()]
    assert "1.2.3.4" not in lines[0]
    assert hash_uid(" 1.2.3.4 ") == hash_uid("1.2.3.4")


def test_open_audit_sink_targets(tmp_path):
    assert open_audit_sink(None) is None
    path = tmp_path / "audit.jsonl"
    sink = open_audit_sink(str(path))
    sink.write(AuditEvent(request_id="r", route="x"))
    sink.close()
    assert json.loads(path.read_text())["request_id"] == "r"


def test_one_event_per_request_and_none_for_probes_and_scrapes(tmp_path):
    path = tmp_path / "audit.jsonl"
    settings = Settings(
        engine="fake", served_model_name="fake", audit_log=str(path), max_body_bytes=100_000
    )
    service = build_embedded(settings, FakeEngine())
    with ThreadedServer(service.app) as server:
        url = server.base_url + "/v1/chat/completions"
        ok = httpx.post(
            url,
            json={"model": "fake", "messages": image_message(png_data_url()), "max_tokens": 2},
            headers={"X-Request-Id": "audit-ok"},
        )
        bad = httpx.post(url, json={"model": "fake", "messages": []})
        too_big = httpx.post(url, content=b"x" * (settings.max_body_bytes + 1))
        models = httpx.get(server.base_url + "/v1/models")
        missing = httpx.get(server.base_url + "/v1/nothing-here")
        httpx.get(server.base_url + "/health/live")
        httpx.get(server.base_url + "/metrics")
    assert (ok.status_code, bad.status_code, too_big.status_code) == (200, 400, 413)
    assert (models.status_code, missing.status_code) == (200, 404)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["route"], e["outcome"], e["status"]) for e in events] == [
        ("/v1/chat/completions", "ok", 200),
        ("/v1/chat/completions", "invalid_request", 400),
        ("/v1/chat/completions", "request_too_large", 413),
        ("/v1/models", "ok", 200),
        ("other", "http_404", 404),
    ]
    assert events[0]["request_id"] == "audit-ok" and events[0]["images"] == 1
    assert all(e["latency_ms"] > 0 for e in events)
    # The model the request asked for, once looked up; not the gateway's default for
    # requests refused before that or naming none.
    assert [e["model"] for e in events] == ["fake", None, None, None, None]
