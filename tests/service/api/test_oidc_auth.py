"""Access tokens from a real OpenID Provider (npm oidc-provider on loopback) through a
real gateway (embedded, fake engine): the official openai SDK with a token as its
api_key, every refused token a 401 that quotes nothing of it, claims -> tenant with
the tenant's limits, scopes per route family, the user in the audit trail, and a
key rotated (and the IdP stopped) under a running gateway."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from service.config import OidcSettings, Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer, image_message, png_data_url
from tests.oidc import AUDIENCE, SERVICE_CLIENT, OidcProvider

MODEL = "fake"


@dataclass
class Gateway:
    url: str
    audit_path: Path
    key: str  # an API key of tenant "radiology"

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def last_audit(self, request_id: str) -> dict:
        """The request's event (written just after its response was sent)."""
        deadline = time.monotonic() + 5
        while True:
            found = [e for e in self.audit() if e["request_id"] == request_id]
            if found or time.monotonic() > deadline:
                return found[-1]
            time.sleep(0.01)

    def client(self, token: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=token, max_retries=0)

    def chat(self, token: str | None, url_suffix: str = "", **body) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        return httpx.post(
            self.url + "/v1/chat/completions" + url_suffix,
            json={**request, **body},
            headers=headers,
            timeout=30,
        )


@contextlib.contextmanager
def gateway_for(oidc_provider: OidcProvider, tmp: Path, **oidc) -> Iterator[Gateway]:
    keys_path, audit_path = tmp / "keys.json", tmp / "audit.jsonl"
    keys = KeyFile(
        tenants={
            "radiology": TenantPolicy(max_images_per_request=1),
            "emergency": TenantPolicy(requests_per_minute=2),
            "research": TenantPolicy(),
        },
        claim_tenants={"grp-ed-7f3a": "emergency"},
    )
    key = keys.create("radiology", name="pacs")
    keys.save(keys_path)
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        host="0.0.0.0",  # what a deployment binds; the test server listens on loopback
        api_keys_file=keys_path,
        audit_log=str(audit_path),
        oidc=OidcSettings(
            issuer=oidc_provider.issuer,
            audience=AUDIENCE,
            required_scopes={"ops": "gmaivl.ops"},
            **oidc,
        ),
    )
    service = build_embedded(settings, FakeEngine(token_interval=0))
    with ThreadedServer(service.app) as server:
        yield Gateway(server.base_url, audit_path, key)


@pytest.fixture(scope="module")
def gateway(oidc_provider, tmp_path_factory) -> Iterator[Gateway]:
    with gateway_for(oidc_provider, tmp_path_factory.mktemp("gateway")) as gateway:
        yield gateway


def test_a_real_token_answers_through_the_openai_sdk_and_names_its_subject(oidc_provider, gateway):
    token = oidc_provider.client_credentials_token()
    response = gateway.client(token).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert response.parse().choices[0].message.content
    event = gateway.last_audit(response.headers["x-request-id"])
    assert (event["sub"], event["iss"]) == (SERVICE_CLIENT, oidc_provider.issuer)
    assert (event["tenant"], event["key_id"], event["outcome"]) == ("radiology", None, "ok")


def test_keys_still_work_beside_tokens(gateway):
    r = gateway.chat(gateway.key)
    assert r.status_code == 200
    event = gateway.last_audit(r.headers["x-request-id"])
    assert event["key_id"] is not None and event["sub"] is None and event["tenant"] == "radiology"


def test_every_refused_token_is_a_401_that_quotes_nothing_of_it(oidc_provider, gateway):
    for case, token in oidc_provider.refused_tokens().items():
        r = gateway.chat(token)
        assert r.status_code == 401, (case, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        error = r.json()["error"]
        assert error["type"] == "authentication_error"
        assert error["code"] in ("invalid_token", "token_expired"), case
        for piece in token.split("."):
            assert piece[:12] not in r.text or len(piece) < 8, case
        for value in ("elsewhere", "another-service", "nobody-published", "attacker", "clinician"):
            assert value not in r.text, (case, r.text)
        event = gateway.last_audit(r.headers["x-request-id"])
        assert event["outcome"] == error["code"] and event["sub"] is None
    assert not any(
        t in gateway.audit_path.read_text() for t in oidc_provider.refused_tokens().values()
    )


def test_a_token_in_the_query_string_is_refused(oidc_provider, gateway):
    token = oidc_provider.client_credentials_token()
    r = gateway.chat(None, f"?access_token={token}")
    assert r.status_code == 401 and token not in r.text
    assert "Authorization header" in r.json()["error"]["message"]
    beside = gateway.chat(token, f"?access_token={token}")  # even beside a valid header
    assert beside.status_code == 401


def test_groups_select_the_tenant_and_its_limits_apply(oidc_provider, gateway):
    radiology = oidc_provider.sign(sub="dr-rad", groups=["staff", "radiology"])
    messages = image_message(png_data_url())
    messages[0]["content"].append({"type": "image_url", "image_url": {"url": png_data_url()}})
    r = gateway.chat(radiology, messages=messages)  # radiology: one image per request
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_images"
    assert gateway.last_audit(r.headers["x-request-id"])["tenant"] == "radiology"

    emergency = oidc_provider.sign(sub="dr-ed", groups=["grp-ed-7f3a"])  # the explicit mapping
    statuses = [gateway.chat(emergency).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # emergency: 2 requests per minute
    last = gateway.chat(emergency)
    assert last.json()["error"]["code"] == "tenant_requests_per_minute"
    event = gateway.last_audit(last.headers["x-request-id"])
    assert (event["tenant"], event["sub"]) == ("emergency", "dr-ed")


@pytest.mark.parametrize(
    ("groups", "code"),
    [(["staff"], "no_tenant"), (["radiology", "research"], "ambiguous_tenant")],
)
def test_no_tenant_or_two_tenants_is_a_403_naming_the_claim_not_the_groups(
    oidc_provider, gateway, groups, code
):
    r = gateway.chat(oidc_provider.sign(sub="dr-nobody", groups=groups))
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == code and "'groups'" in error["message"]
    assert not any(g in error["message"] for g in [*groups, "emergency"])
    event = gateway.last_audit(r.headers["x-request-id"])
    assert (event["sub"], event["outcome"]) == ("dr-nobody", code)  # who was refused


def test_a_route_family_may_require_a_scope(oidc_provider, gateway):
    chat_only = oidc_provider.client_credentials_token(scope="gmaivl.chat")
    assert gateway.chat(chat_only).status_code == 200
    headers = {"Authorization": f"Bearer {chat_only}"}
    r = httpx.get(gateway.url + "/v1/ops/stats", headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    full = {"Authorization": f"Bearer {oidc_provider.client_credentials_token()}"}
    assert httpx.get(gateway.url + "/v1/ops/stats", headers=full).status_code == 200
    key = {"Authorization": f"Bearer {gateway.key}"}  # keys have no scopes to check
    assert httpx.get(gateway.url + "/v1/ops/stats", headers=key).status_code == 200


def test_tokens_never_reach_the_logs(oidc_provider, gateway, caplog):
    token = oidc_provider.sign(sub="dr-logged")
    with caplog.at_level(logging.DEBUG):
        ok = gateway.chat(token)
        assert ok.status_code == 200
        gateway.chat(oidc_provider.refused_tokens()["expired"])
        gateway.chat(None, f"?access_token={token}")
        gateway.last_audit(ok.headers["x-request-id"])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert token.split(".")[1][:16] not in logged and token.split(".")[2][:16] not in logged
    assert token.split(".")[1][:16] not in gateway.audit_path.read_text()


# --- the IdP changes under a running gateway ------------------------------------------


@pytest.fixture
def own_provider(tmp_path: Path) -> Iterator[OidcProvider]:
    (tmp_path / "idp").mkdir()
    server = OidcProvider(tmp_path / "idp").start()
    try:
        yield server
    finally:
        server.stop()


def test_a_key_rotated_at_the_idp_is_accepted_without_restart(own_provider, tmp_path):
    with gateway_for(own_provider, tmp_path, jwks_refresh_interval=0.0) as gateway:
        assert gateway.chat(own_provider.client_credentials_token()).status_code == 200
        own_provider.rotate()
        rotated = own_provider.client_credentials_token()
        assert own_provider.signing_key.kid in json.dumps(_header(rotated))
        assert gateway.chat(rotated).status_code == 200


def test_the_idp_stopped_leaves_the_cached_keys_verifying(own_provider, tmp_path):
    with gateway_for(
        own_provider, tmp_path, jwks_refresh_interval=0.0, jwks_max_age=0.001
    ) as gateway:
        assert gateway.chat(own_provider.client_credentials_token()).status_code == 200
        own_provider.stop()
        fresh = own_provider.sign(sub="while-the-idp-is-down")  # never seen by the gateway
        r = gateway.chat(fresh)
        assert r.status_code == 200, r.text
        assert gateway.last_audit(r.headers["x-request-id"])["sub"] == "while-the-idp-is-down"


def _header(token: str) -> dict:
    import base64

    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_a_stored_response_created_with_a_users_token_is_that_users_alone(oidc_provider, gateway):
    """Another clinician of the same tenant, and the tenant's API key, get 404 for it
    (retrieve, input items, cancel, delete, continuing it); its creator sees it. A
    response created with the key stays the tenant's, as before."""
    alice, bob = oidc_provider.sign(sub="clinician-alice"), oidc_provider.sign(sub="clinician-bob")
    created = gateway.client(alice).responses.create(model=MODEL, input="hi", max_output_tokens=2)
    assert gateway.client(alice).responses.retrieve(created.id).id == created.id
    for other in (bob, gateway.key):
        responses = gateway.client(other).responses
        for call in (
            responses.retrieve,
            responses.input_items.list,
            responses.cancel,
            responses.delete,
        ):
            with pytest.raises(openai.NotFoundError):
                call(created.id)
        with pytest.raises(openai.NotFoundError) as refused:
            responses.create(
                model=MODEL, input="and?", previous_response_id=created.id, max_output_tokens=2
            )
        assert refused.value.body["param"] == "previous_response_id"
    follow_up = gateway.client(alice).responses.create(
        model=MODEL, input="and?", previous_response_id=created.id, max_output_tokens=2
    )
    assert follow_up.previous_response_id == created.id and follow_up.status != "failed"
    shared = gateway.client(gateway.key).responses.create(
        model=MODEL, input="hi", max_output_tokens=2
    )
    assert gateway.client(bob).responses.retrieve(shared.id).id == shared.id
