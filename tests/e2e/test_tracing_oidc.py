"""A user's request traced across gateway, Redis and worker: the trace names the user
only by a keyed pseudonym (HMAC of iss and sub), never by sub or token."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx

from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.e2e.test_tracing import dicom_chat, traced, traceparent, wait_for_spans  # noqa: F401
from tests.oidc import AUDIENCE, OidcProvider

SECRET = "pseudonym-key-of-this-deployment"
USER = "dr-trace-7731"


def test_the_trace_names_the_user_by_a_keyed_pseudonym_only(traced, tmp_path):  # noqa: F811
    cluster, receiver = traced
    (tmp_path / "idp").mkdir()
    provider = OidcProvider(tmp_path / "idp").start()
    try:
        KeyFile(tenants={"radiology": TenantPolicy()}).save(tmp_path / "keys.json")
        cluster.env.update(
            GMAIVL_AUTH="keys",
            GMAIVL_API_KEYS_FILE=str(tmp_path / "keys.json"),
            GMAIVL_OIDC_ISSUER=provider.issuer,
            GMAIVL_OIDC_AUDIENCE=AUDIENCE,
            GMAIVL_OIDC_SUBJECT_HASH_SECRET=SECRET,
        )
        cluster.add_worker()
        gateway = cluster.add_gateway()
        token = provider.sign(sub=USER)
        header, trace_id, _ = traceparent()
        response = httpx.post(
            gateway + "/v1/chat/completions",
            json=dicom_chat(),
            headers={"traceparent": header, "Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        spans = wait_for_spans(receiver, trace_id, {"POST /v1/chat/completions", "worker.job"})
        expected = hmac.new(
            SECRET.encode(), f"{provider.issuer}\x00{USER}".encode(), hashlib.sha256
        ).hexdigest()[:32]
        server = spans["POST /v1/chat/completions"]
        assert server.attributes["gmaivl.user.pseudonym"] == expected
        dumped = json.dumps([s.__dict__ for s in receiver.trace(trace_id)], default=str)
        assert USER not in dumped
        assert not any(piece[:16] in dumped for piece in token.split("."))
        audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert [e["sub"] for e in audit if e["trace_id"] == trace_id] == [USER]
    finally:
        provider.stop()
