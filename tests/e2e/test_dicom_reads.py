"""Study reads end to end against a real Orthanc: a multi-series study (a CT series,
an MR series and an ECG waveform series) uploaded over REST, a read POSTed with an
API key, polled to `completed`, and its SR found in Orthanc over QIDO-RS, fetched
over WADO-RS and checked with pydicom and highdicom. Then the failure paths
(unknown study, PACS stopped mid-read, cancel), the signed webhook, and the PHI
check: the marker in PatientName is in the SR and nowhere else.

The gateway is the real embedded app (fake engine: the read path, not a model,
is under test here) on a real uvicorn server with keys and an audit log.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import highdicom as hd
import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from service.config import Settings
from service.core.lanes import Lane
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.reads.webhook import SIGNATURE_HEADER, verify
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer
from tests.orthanc import PASSWORD, OrthancServer

MODEL = "fake"
MARKER = "PHIREAD" + secrets.token_hex(5).upper()
SECRET = "webhook-secret-" + secrets.token_hex(4)


def _save(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Study:
    uid: str
    files: list[bytes]
    ct_sops: list[str]
    mr_sop: str

    @property
    def expected(self) -> list[str]:
        return [self.ct_sops[1], self.mr_sop]  # the middle CT, then the MR


def make_study() -> Study:
    """Three CT instances, one MR, one ECG waveform: one patient (the marker), one study."""
    study = generate_uid()
    files, ct_sops = [], []
    patient = {"PatientName": f"{MARKER}^Jane", "PatientID": MARKER, "AccessionNumber": "A1"}

    def fill(ds, series: str, number: int, instance: int):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SeriesNumber, ds.InstanceNumber = number, instance
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for key, value in patient.items():
            setattr(ds, key, value)
        return ds

    ct_series = generate_uid()
    for instance in (3, 1, 2):  # uploaded out of order: the middle is by Instance Number
        ds = fill(dcmread(get_testdata_file("CT_small.dcm")), ct_series, 1, instance)
        files.append(_save(ds))
        ct_sops.append((instance, str(ds.SOPInstanceUID)))
    mr = fill(dcmread(get_testdata_file("MR_small.dcm")), generate_uid(), 2, 1)
    ecg = fill(dcmread(get_testdata_file("waveform_ecg.dcm")), generate_uid(), 3, 1)
    files += [_save(mr), _save(ecg)]
    ordered = [sop for _, sop in sorted(ct_sops)]
    return Study(study, files, ordered, str(mr.SOPInstanceUID))


@dataclass
class Hooks:
    """A webhook receiver on loopback: records every POST (body and headers)."""

    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    def start(self) -> tuple[ThreadingHTTPServer, str]:
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.received.append((body, dict(self.headers)))
                hooks.event.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/hooks/read"


@dataclass
class Env:
    url: str
    key: str
    other_key: str
    study: Study
    pacs: OrthancServer
    spare: OrthancServer
    spare_study: Study
    hooks: Hooks
    hook_url: str
    audit: Path
    log: io.StringIO
    engine: FakeEngine

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def post(self, body: dict, key: str | None = None) -> httpx.Response:
        return httpx.post(self.url + "/v1/dicom/reads", json=body, headers=self.headers(key))

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers(key), timeout=10)

    def wait(self, read_id: str, until: tuple[str, ...], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            read = self.get(f"/v1/dicom/reads/{read_id}").json()
            if read["status"] in until:
                return read
            time.sleep(0.05)
        raise TimeoutError(read)


@pytest.fixture(scope="module")
def env(orthanc: OrthancServer, tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("reads")
    study = make_study()
    for data in study.files:
        orthanc.upload(data)
    spare = OrthancServer(tmp / "spare").start()  # the PACS a test stops
    spare_study = make_study()
    for data in spare_study.files:
        spare.upload(data)
    keys = KeyFile(
        tenants={
            "radiology": TenantPolicy(),
            "other": TenantPolicy(max_priority=Lane.routine, max_images_per_request=1),
        }
    )
    key, other_key = keys.create("radiology"), keys.create("other")
    keys.save(tmp / "keys.json")
    hooks = Hooks()
    hook_server, hook_url = hooks.start()
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        api_keys_file=tmp / "keys.json",
        api_keys_reload_interval=0,
        audit_log=str(tmp / "audit.jsonl"),
        pacs=[orthanc.pacs_entry("main"), spare.pacs_entry("spare")],
        fetch={"allowed_hosts": ["127.0.0.1"], "allowed_networks": ["127.0.0.0/8"]},
        webhook_secret=SECRET,
        webhook_backoff=0.05,
        model_version="test-1",
    )
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # every logger at its most verbose: the PHI test reads it
    engine = FakeEngine(token_interval=0.02)
    service = build_embedded(settings, engine)
    try:
        with ThreadedServer(service.app) as server:
            yield Env(
                server.base_url, key, other_key, study, orthanc, spare, spare_study, hooks,
                hook_url, tmp / "audit.jsonl", log, engine,
            )  # fmt: skip
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        hook_server.shutdown()
        spare.stop()


def read_body(env: Env, **overrides) -> dict:
    return {"model": MODEL, "study_instance_uid": env.study.uid, "pacs": "main",
            "max_tokens": 8, **overrides}  # fmt: skip


def test_a_read_stores_its_sr_in_the_study(env: Env):
    r = env.post(read_body(env))
    assert r.status_code == 202, r.text
    submitted = r.json()
    assert submitted["object"] == "dicom.read" and submitted["status"] == "queued"
    assert r.headers["location"] == f"/v1/dicom/reads/{submitted['id']}"
    read = env.wait(submitted["id"], ("completed", "failed"))
    assert read["status"] == "completed", read["error"]
    assert read["instances"] == env.study.expected  # ECG skipped, middle CT, then MR
    assert read["answer"] == "The image shows no acute abnormality.The"
    assert read["usage"]["completion_tokens"] == 8
    sr = read["sr"]
    assert sr["stored"] is True and sr["study_instance_uid"] == env.study.uid

    # The SR in Orthanc: found over QIDO-RS in the same study, fetched over WADO-RS.
    auth, base = env.pacs.auth, env.pacs.dicomweb
    found = httpx.get(
        f"{base}/studies/{env.study.uid}/series", params={"Modality": "SR"}, auth=auth
    ).json()
    assert [s["0020000E"]["Value"][0] for s in found] == [sr["series_instance_uid"]]
    wado = httpx.get(
        f"{base}/studies/{env.study.uid}/series/{sr['series_instance_uid']}/instances/"
        f"{sr['sop_instance_uid']}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        auth=auth,
    )
    assert wado.status_code == 200
    from service.media.dicomweb import first_dicom_part
    from service.media.fetch import Fetched

    part = first_dicom_part(Fetched(wado.headers["content-type"], "multipart/related",
                                    wado.content), "sr")  # fmt: skip
    ds = dcmread(io.BytesIO(part))
    assert ds.Modality == "SR"
    assert ds.StudyInstanceUID == env.study.uid and ds.PatientID == MARKER
    assert ds.VerificationFlag == "UNVERIFIED"
    assert "not for diagnostic use" in ds.SeriesDescription
    document = hd.sr.ComprehensiveSR.from_dataset(ds)
    assert [e[2] for e in document.get_evidence()] == read["instances"]
    (findings,) = [i for i in ds.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "59776-5"]  # fmt: skip
    (finding,) = findings.ContentSequence
    assert finding.TextValue == read["answer"]  # the answer, alone under Findings
    images = [i for i in finding.ContentSequence if i.ValueType == "IMAGE"]
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images] == read[
        "instances"
    ]
    assert ds.ContributingEquipmentSequence[-2].Manufacturer == "GMAI-VL"

    # The same bytes from the gateway.
    served = env.get(f"/v1/dicom/reads/{read['id']}/sr")
    assert served.headers["content-type"] == "application/dicom"
    assert dcmread(io.BytesIO(served.content)).SOPInstanceUID == sr["sop_instance_uid"]


def test_openapi_documents_the_read_api_with_the_issue_field_names(env: Env):
    schema = httpx.get(env.url + "/openapi.json").json()
    assert {"post"} == set(schema["paths"]["/v1/dicom/reads"])
    assert {"get", "delete"} == set(schema["paths"]["/v1/dicom/reads/{read_id}"])
    sr = schema["paths"]["/v1/dicom/reads/{read_id}/sr"]["get"]["responses"]["200"]
    assert "application/dicom" in sr["content"]
    request = schema["components"]["schemas"]["ReadRequest"]["properties"]
    assert set(request) == {"model", "study_instance_uid", "series_instance_uid",
                            "sop_instance_uids", "pacs", "prompt", "dicom", "max_tokens",
                            "priority", "store", "webhook"}  # fmt: skip
    read = schema["components"]["schemas"]["DicomRead"]["properties"]
    assert set(read) == {"id", "object", "source", "calling_ae", "status", "created", "model",
                         "study_instance_uid", "instances", "answer", "usage", "sr", "error",
                         "requested_by"}  # fmt: skip


def test_unknown_study_is_404_and_bad_input_400(env: Env):
    r = env.post(read_body(env, study_instance_uid="1.2.3.4.5.6.7.999"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "study_not_found"
    r = env.post(read_body(env, study_instance_uid="not a uid"))
    assert r.status_code == 400
    r = env.post({k: v for k, v in read_body(env).items() if k != "pacs"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "pacs_required"
    r = env.post(read_body(env, webhook="http://elsewhere.example/hook"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "webhook_not_allowed"
    assert env.get("/v1/dicom/reads/read_0").status_code == 404
    r = httpx.post(env.url + "/v1/dicom/reads", json=read_body(env))
    assert r.status_code == 401


def test_another_tenant_cannot_see_a_read(env: Env):
    read_id = env.post(read_body(env, store=False)).json()["id"]
    assert env.get(f"/v1/dicom/reads/{read_id}", key=env.other_key).status_code == 404
    assert env.get(f"/v1/dicom/reads/{read_id}/sr", key=env.other_key).status_code == 404
    read = env.wait(read_id, ("completed", "failed"))
    assert read["sr"]["stored"] is False
    assert env.get(f"/v1/dicom/reads/{read_id}/sr").status_code == 200


def test_tenant_policy_applies_as_for_chat(env: Env):
    r = env.post(read_body(env, priority="stat"), key=env.other_key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "priority_not_allowed"
    two = [env.study.ct_sops[0], env.study.mr_sop]
    r = env.post(read_body(env, sop_instance_uids=two), key=env.other_key)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_images"
    read_id = env.post(read_body(env, store=False), key=env.other_key).json()["id"]
    deadline = time.monotonic() + 30
    while (read := env.get(f"/v1/dicom/reads/{read_id}", key=env.other_key).json())[
        "status"
    ] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert read["instances"] == env.study.expected[:1]  # the tenant's one image


def test_named_instances_and_a_window_preset(env: Env):
    body = read_body(env, sop_instance_uids=[env.study.mr_sop], dicom={"window": "brain"})
    read = env.wait(env.post(body).json()["id"], ("completed", "failed"))
    assert read["status"] == "completed" and read["instances"] == [env.study.mr_sop]
    missing = read_body(env, sop_instance_uids=["1.2.3.4"], store=False)
    read = env.wait(env.post(missing).json()["id"], ("completed", "failed"))
    assert read["status"] == "failed" and read["error"]["code"] == "instance_not_found"


def test_pacs_stopped_mid_read_fails_with_a_code(env: Env):
    body = read_body(
        env,
        study_instance_uid=env.spare_study.uid,
        pacs="spare",
        max_tokens=60,
        webhook=env.hook_url,
    )
    env.hooks.event.clear()
    read_id = env.post(body).json()["id"]
    deadline = time.monotonic() + 20
    while not env.get(f"/v1/dicom/reads/{read_id}").json()["instances"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    env.spare.stop()  # the images are fetched; the SR has nowhere to go
    read = env.wait(read_id, ("completed", "failed"))
    assert read["status"] == "failed"
    assert read["error"]["code"] == "pacs_unavailable"
    assert "spare" in read["error"]["message"]
    assert env.hooks.event.wait(10)  # failures are announced too
    sent = json.loads(env.hooks.received[-1][0])
    assert sent["id"] == read_id and sent["error"]["code"] == "pacs_unavailable"


def test_cancel_stops_the_generation(env: Env):
    read_id = env.post(read_body(env, max_tokens=500)).json()["id"]
    env.wait(read_id, ("running",))
    deadline = time.monotonic() + 20
    while not env.engine.running:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = httpx.delete(env.url + f"/v1/dicom/reads/{read_id}", headers=env.headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    deadline = time.monotonic() + 5
    while env.engine.running:
        assert time.monotonic() < deadline, "the engine kept generating"
        time.sleep(0.02)
    assert env.get(f"/v1/dicom/reads/{read_id}").json()["status"] == "cancelled"
    assert env.get(f"/v1/dicom/reads/{read_id}/sr").status_code == 404
    cancelled = [json.loads(line) for line in env.audit.read_text().splitlines()]
    assert [e["outcome"] for e in cancelled if e.get("read_id") == read_id] == ["cancelled"]


def delivered(env: Env) -> float:
    metrics = httpx.get(env.url + "/metrics").text
    line = 'gmaivl_webhook_deliveries_total{outcome="delivered"} '
    return next((float(x[len(line) :]) for x in metrics.splitlines() if x.startswith(line)), 0.0)


def test_webhook_is_signed(env: Env):
    before = delivered(env)
    env.hooks.event.clear()
    read_id = env.post(read_body(env, webhook=env.hook_url)).json()["id"]
    assert env.hooks.event.wait(30)
    body, headers = env.hooks.received[-1]
    assert verify(SECRET, body, headers[SIGNATURE_HEADER])
    assert not verify(SECRET, body + b" ", headers[SIGNATURE_HEADER])
    sent = json.loads(body)
    assert sent["id"] == read_id and sent["status"] == "completed"
    assert sent == env.get(f"/v1/dicom/reads/{read_id}").json()
    deadline = time.monotonic() + 5  # counted once the receiver's answer is in
    while delivered(env) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert delivered(env) == before + 1


def test_the_read_command_waits_and_prints_where_the_sr_went(env: Env):
    """`gmai-vl read --wait`, as an operator runs it (a child process, key from the env)."""
    command = [sys.executable, "-m", "service.cli", "read", "--base-url", env.url,
               "--study", env.study.uid, "--pacs", "main", "--max-tokens", "3",
               "--wait"]  # fmt: skip
    done = subprocess.run(
        command, env={**os.environ, "GMAIVL_API_KEY": env.key}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("read_") and lines[0].endswith(" completed")
    assert lines[1] == "The image shows"
    assert lines[2].startswith(f"SR stored in the PACS: study {env.study.uid} series ")
    unknown = subprocess.run(
        [*command[:7], "1.2.3.4.5", *command[8:]],
        env={**os.environ, "GMAIVL_API_KEY": env.key},
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 1 and "study_not_found" in unknown.stderr


def test_phi_marker_only_in_the_sr(env: Env):
    """Runs last: reads everything the gateway wrote."""
    read_id = env.post(read_body(env, prompt=f"Any finding? {MARKER}?")).json()["id"]
    read = env.wait(read_id, ("completed", "failed"))
    assert MARKER.encode() in env.get(f"/v1/dicom/reads/{read_id}/sr").content
    bad = env.post(read_body(env, study_instance_uid="1.2.3." + "9" * 20, pacs=MARKER))
    assert bad.status_code == 400 and MARKER not in bad.text
    audit = env.audit.read_text()
    events = [json.loads(line) for line in audit.splitlines()]
    texts = {
        "log": env.log.getvalue(),
        "metrics": httpx.get(env.url + "/metrics").text,
        "audit": audit,
        "errors": bad.text,
    }
    for where, text in texts.items():
        assert MARKER not in text, f"PHI marker in {where}"
        assert PASSWORD not in text, f"PACS password in {where}"
        assert env.study.uid not in text, f"Study UID in {where}"
        for uid in read["instances"]:
            assert uid not in text, f"SOP Instance UID in {where}"
    assert texts["log"], "nothing was logged: the check above would pass vacuously"
    read_events = [e for e in events if e.get("read_id") == read_id]
    assert len(read_events) == 1
    from service.audit import hash_uid

    assert read_events[0]["study_instance_uid_sha256"] == hash_uid(env.study.uid)
    assert read_events[0]["sop_instance_uid_sha256"] == [hash_uid(u) for u in read["instances"]]
    assert read_events[0]["outcome"] == "ok" and read_events[0]["tenant"] == "radiology"
