"""A study read started with a user's access token (a real OpenID Provider, npm
oidc-provider) against the test Orthanc: the read object names who asked
(`requested_by`, to the same tenant), the read's audit event names the user."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.config import OidcSettings, PacsEntry, Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer
from tests.oidc import AUDIENCE, OidcProvider
from tests.orthanc import OrthancServer

MODEL = "fake"
USER = "dr-reader-5120"


@dataclass
class Env:
    url: str
    audit_path: Path
    key: str  # an API key of tenant radiology

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture(scope="module")
def env(oidc_provider: OidcProvider, orthanc: OrthancServer, tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("reads-oidc")
    keys = KeyFile(tenants={"radiology": TenantPolicy(), "cardiology": TenantPolicy()})
    key = keys.create("radiology")
    keys.save(tmp / "keys.json")
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        api_keys_file=tmp / "keys.json",
        audit_log=str(tmp / "audit.jsonl"),
        pacs=[PacsEntry(**orthanc.pacs_entry())],
        oidc=OidcSettings(issuer=oidc_provider.issuer, audience=AUDIENCE),
    )
    service = build_embedded(settings, FakeEngine(token_interval=0))
    with ThreadedServer(service.app) as server:
        yield Env(server.base_url, tmp / "audit.jsonl", key)


def read_body() -> dict:
    study = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    return {
        "model": MODEL,
        "study_instance_uid": str(study.StudyInstanceUID),
        "max_tokens": 4,
        "store": False,
    }


def finished(env: Env, read_id: str, credential: str) -> dict:
    headers = {"Authorization": f"Bearer {credential}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        read = httpx.get(f"{env.url}/v1/dicom/reads/{read_id}", headers=headers).json()
        if read["status"] in ("completed", "failed", "cancelled"):
            return read
        time.sleep(0.1)
    raise AssertionError("the read did not finish in 60 s")


def test_a_read_started_with_a_users_token_names_who_asked(env, oidc_provider):
    token = oidc_provider.sign(sub=USER, groups=["radiology"])
    started = httpx.post(
        env.url + "/v1/dicom/reads",
        json=read_body(),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert started.status_code == 202, started.text
    expected = {"sub": USER, "iss": oidc_provider.issuer}
    assert started.json()["requested_by"] == expected
    read = finished(env, started.json()["id"], token)
    assert read["status"] == "completed", read
    assert read["requested_by"] == expected
    # The same tenant sees who asked (a key of radiology); another tenant sees no read.
    assert finished(env, read["id"], env.key)["requested_by"] == expected
    other = oidc_provider.sign(sub="dr-cardio", groups=["cardiology"])
    r = httpx.get(
        f"{env.url}/v1/dicom/reads/{read['id']}", headers={"Authorization": f"Bearer {other}"}
    )
    assert r.status_code == 404
    # The read's own audit event (written when it ends) and the submit's both name the user.
    deadline = time.monotonic() + 10
    while not [e for e in env.audit() if e.get("read_id") == read["id"]]:
        assert time.monotonic() < deadline, "no audit event for the read"
        time.sleep(0.05)
    ended = [e for e in env.audit() if e.get("read_id") == read["id"]][-1]
    assert (ended["sub"], ended["iss"], ended["tenant"]) == (
        USER,
        oidc_provider.issuer,
        "radiology",
    )
    submit = [e for e in env.audit() if e["request_id"] == started.headers["x-request-id"]]
    assert submit and submit[0]["sub"] == USER


def test_a_read_started_with_a_key_names_no_user(env):
    started = httpx.post(
        env.url + "/v1/dicom/reads",
        json=read_body(),
        headers={"Authorization": f"Bearer {env.key}"},
    )
    assert started.status_code == 202, started.text
    assert started.json()["requested_by"] is None
    assert finished(env, started.json()["id"], env.key)["requested_by"] is None
