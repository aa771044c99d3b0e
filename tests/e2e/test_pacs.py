"""PACS-native input end to end: `gmai-vl serve` (the tiny model, the real engine) with
a real Orthanc as its configured PACS, driven by the official openai SDK. Ends with
the PHI test: a DICOM whose header is full of a marker string goes through every
path, and the marker appears in no log line, no audit event, no metric, no error."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.conftest import serve_tiny
from tests.orthanc import PASSWORD, OrthancServer

MARKER = "PHIMARKER" + secrets.token_hex(6).upper()


def phi_dicom() -> bytes:
    """CT_small with the marker in every header field that names or describes a person."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = f"{MARKER}^Jane"
    ds.PatientID = MARKER
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = MARKER
    ds.StudyDescription = MARKER
    ds.ReferringPhysicianName = MARKER
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def invalid_phi_dicom() -> bytes:
    """The marker inside values pydicom finds invalid when it reads them (a UID, a date):
    its warnings quote such values, so they must never reach a log."""
    ds = dcmread(io.BytesIO(phi_dicom()))
    ds.SOPInstanceUID = f"1.2.{MARKER}"
    ds.StudyDate = MARKER
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def phi_study_dicom() -> bytes:
    """The PHI file alone in a study of its own (for study reads)."""
    ds = dcmread(io.BytesIO(phi_dicom()))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


PHI_DICOM = phi_dicom()
PHI_UID = str(dcmread(io.BytesIO(PHI_DICOM), stop_before_pixels=True).SOPInstanceUID)
PHI_STUDY_DICOM = phi_study_dicom()
PHI_STUDY = dcmread(io.BytesIO(PHI_STUDY_DICOM), stop_before_pixels=True)


class Served:
    def __init__(self, base_url: str, log: Path, audit: Path) -> None:
        self.base_url, self.log, self.audit = base_url, log, audit
        self.client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def served(tiny_checkpoint, orthanc: OrthancServer, tmp_path_factory) -> Iterator[Served]:
    orthanc.upload(PHI_DICOM)
    orthanc.upload(PHI_STUDY_DICOM)
    folder = tmp_path_factory.mktemp("pacs-serve")
    log, audit = folder / "server.log", folder / "audit.jsonl"
    env = {
        "GMAIVL_PACS": json.dumps([orthanc.pacs_entry()]),
        "GMAIVL_AUDIT_LOG": str(audit),
        "GMAIVL_LOG_LEVEL": "debug",  # every logger, uvicorn's and ours, at its most verbose
    }
    with serve_tiny(tiny_checkpoint, env=env, log_path=log) as base_url:
        yield Served(base_url, log, audit)


def parts(url: str, dicom: dict | None = None, text: str = "Describe the findings.") -> list:
    image_url: dict = {"url": url}
    if dicom:
        image_url["dicom"] = dicom
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": image_url},
                {"type": "text", "text": text},
            ],
        }
    ]


def file_bytes(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def test_dicomweb_instance_answers_200_with_frame_and_window(served, orthanc):
    url = orthanc.instance_url(file_bytes("693_J2KI.dcm"))
    r = served.client.chat.completions.create(
        model="tiny", messages=parts(url, {"window": "abdomen"}), max_tokens=4
    )
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.model_extra["dicom"] == [
        {
            "param": "messages[0].content[0]",
            "frame_count": 1,
            "frames": [
                {
                    "number": 1,
                    "window": {
                        "center": 40.0,
                        "width": 400.0,
                        "function": "LINEAR",
                        "source": "preset",
                        "preset": "abdomen",
                    },
                }
            ],
        }
    ]


def test_frames_of_a_cine_are_images_for_the_model(served, orthanc):
    url = orthanc.instance_url(file_bytes("examples_ybr_color.dcm"))
    one = served.client.chat.completions.create(model="tiny", messages=parts(url), max_tokens=1)
    three = served.client.chat.completions.create(
        model="tiny", messages=parts(url, {"frames": [1, 15, 30]}), max_tokens=1
    )
    assert one.model_extra["dicom"][0]["frames"] == [{"number": 16, "window": None}]
    assert [f["number"] for f in three.model_extra["dicom"][0]["frames"]] == [1, 15, 30]
    # Two more images reached the model: each is 16 image tokens (+ its template marker).
    extra = three.usage.prompt_tokens - one.usage.prompt_tokens
    assert extra % 2 == 0 and extra // 2 >= 16


def test_rendered_reference_streams(served, orthanc):
    url = orthanc.instance_url(file_bytes("CT_small.dcm")) + "/rendered"
    chunks = list(
        served.client.chat.completions.create(
            model="tiny", messages=parts(url), max_tokens=3, stream=True
        )
    )
    assert chunks[0].model_extra["dicom"] == [
        {"param": "messages[0].content[0]", "rendered_by": "pacs", "window": None}
    ]
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_same_url_on_a_host_off_the_allow_list_is_400_without_connecting(served, orthanc):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        port = listener.getsockname()[1]
        url = orthanc.instance_url(file_bytes("693_J2KI.dcm"))
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            elsewhere = url.replace(f"127.0.0.1:{orthanc.port}", host)
            with pytest.raises(openai.BadRequestError) as info:
                served.client.chat.completions.create(
                    model="tiny", messages=parts(elsewhere), max_tokens=1
                )
            assert info.value.status_code == 400
            assert info.value.body["code"] == "image_url_not_allowed"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()


def test_inline_dicom_over_the_sdk(served):
    url = "data:application/dicom;base64," + base64.b64encode(file_bytes("MR_small.dcm")).decode()
    r = served.client.chat.completions.create(model="tiny", messages=parts(url), max_tokens=2)
    assert r.model_extra["dicom"][0]["frames"][0]["window"]["source"] == "file"


def wait_read(served: Served, read_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        read = httpx.get(f"{served.base_url}/v1/dicom/reads/{read_id}", timeout=10).json()
        if read["status"] in ("completed", "failed", "cancelled"):
            return read
        time.sleep(0.1)
    raise TimeoutError(read_id)


def test_a_study_read_with_the_real_engine(served, orthanc):
    """The tiny model behind a study read: QIDO-RS, WADO-RS, the transformers engine,
    the SR stored back with STOW-RS."""
    study = str(PHI_STUDY.StudyInstanceUID)
    body = {"model": "tiny", "study_instance_uid": study, "max_tokens": 6}
    r = httpx.post(served.base_url + "/v1/dicom/reads", json=body, timeout=30)
    assert r.status_code == 202, r.text
    read = wait_read(served, r.json()["id"])
    assert read["status"] == "completed", read["error"]
    assert read["usage"]["completion_tokens"] <= 6
    assert read["instances"] == [PHI_STUDY.SOPInstanceUID]
    sr = httpx.get(f"{served.base_url}/v1/dicom/reads/{read['id']}/sr", timeout=10)
    ds = dcmread(io.BytesIO(sr.content))
    assert ds.Modality == "SR" and ds.StudyInstanceUID == study
    found = httpx.get(
        f"{orthanc.dicomweb}/studies/{study}/series", params={"Modality": "SR"}, auth=orthanc.auth
    ).json()
    assert read["sr"]["series_instance_uid"] in [s["0020000E"]["Value"][0] for s in found]


@pytest.mark.filterwarnings("ignore::UserWarning")  # the test writes invalid values on purpose
def test_phi_marker_appears_nowhere(served, orthanc):
    """Runs last in this module: it reads the whole log and audit trail of the server."""
    inline = "data:application/dicom;base64," + base64.b64encode(PHI_DICOM).decode()
    truncated = "data:application/dicom;base64," + base64.b64encode(PHI_DICOM[:-3000]).decode()
    instance = orthanc.instance_url(PHI_DICOM)
    prompt = f"Patient {MARKER}, born 1970: any fracture?"
    invalid = "data:application/dicom;base64," + base64.b64encode(invalid_phi_dicom()).decode()
    ok = [
        parts(inline, text=prompt),
        parts(invalid, text=prompt),
        parts(instance, {"window": "bone"}, text=prompt),
        parts(instance + "/rendered", text=prompt),
    ]
    answers = [
        served.client.chat.completions.create(model="tiny", messages=m, max_tokens=4) for m in ok
    ]
    study, read_uid = str(PHI_STUDY.StudyInstanceUID), str(PHI_STUDY.SOPInstanceUID)
    submitted = httpx.post(
        served.base_url + "/v1/dicom/reads",
        json={"model": "tiny", "study_instance_uid": study, "sop_instance_uids": [read_uid],
              "prompt": prompt, "max_tokens": 4},
        timeout=30,
    )  # fmt: skip
    read = wait_read(served, submitted.json()["id"])
    assert read["status"] == "completed", read["error"]
    sr = httpx.get(f"{served.base_url}/v1/dicom/reads/{read['id']}/sr", timeout=10).content
    assert MARKER.encode() in sr  # the SR is where the patient's name belongs
    streamed = list(
        served.client.chat.completions.create(
            model="tiny", messages=parts(inline, text=prompt), max_tokens=4, stream=True
        )
    )
    refused_bodies = [
        {"model": "tiny", "messages": parts(truncated, text=prompt)},  # 422
        {"model": "tiny", "messages": parts(inline, {"frames": [7]}, text=prompt)},  # 400
        {"model": MARKER, "messages": parts(inline, text=prompt)},  # 404
        {"model": "tiny", "messages": [{"role": MARKER, "content": prompt}]},  # 400
    ]
    errors_seen = []
    for body in refused_bodies:
        r = httpx.post(served.base_url + "/v1/chat/completions", json=body, timeout=60)
        assert 400 <= r.status_code < 500, r.text
        errors_seen.append(r.text)
    metrics = httpx.get(served.base_url + "/metrics").text
    requests_sent = len(ok) + 1 + len(refused_bodies)

    def audit_events() -> list[dict]:
        lines = served.audit.read_text().splitlines()
        return [json.loads(line) for line in lines]

    events = audit_events()
    phi_events = [e for e in events if e["sop_instance_uid_sha256"]]
    texts = {
        "answers": " ".join(a.model_dump_json() for a in answers),
        "read": submitted.text + json.dumps(read),
        "stream": " ".join(c.model_dump_json() for c in streamed),
        "errors": " ".join(errors_seen),
        "metrics": metrics,
        "audit": served.audit.read_text(),
        "server log": served.log.read_text(errors="replace"),
    }
    for where, text in texts.items():
        assert MARKER not in text, f"PHI marker leaked into {where}"
        assert PASSWORD not in text, f"PACS password leaked into {where}"
    for where in ("audit", "server log", "errors", "metrics"):
        assert PHI_UID not in texts[where], f"SOP Instance UID in {where}"
        assert read_uid not in texts[where] and study not in texts[where], f"a UID in {where}"
        assert "19700101" not in texts[where]
    # The log is not empty: the test would pass vacuously against a silent server.
    assert "Uvicorn running" in texts["server log"] or "Application startup" in texts["server log"]
    # One audit event per request; the DICOM ones carry the hash of the SOP Instance UID.
    assert len(events) >= requests_sent
    uid_hash = hashlib.sha256(PHI_UID.encode()).hexdigest()
    assert sum(uid_hash in e["sop_instance_uid_sha256"] for e in phi_events) >= 3
    outcomes = [e["outcome"] for e in events[-len(refused_bodies) :]]
    assert outcomes == [
        "unprocessable_image",
        "invalid_frame",
        "model_not_found",
        "invalid_request",
    ]
    assert {e["status"] for e in events[-len(refused_bodies) :]} == {422, 400, 404}
    read_events = [e for e in events if e["route"] == "dicom.read"]
    assert [e["read_id"] for e in read_events if e["read_id"] == read["id"]] == [read["id"]]
    assert read_events[-1]["sop_instance_uid_sha256"] == [
        hashlib.sha256(read_uid.encode()).hexdigest()
    ]
    assert all(
        set(e) - {"read_id", "study_instance_uid_sha256", "webhook", "trace_id"}
        == {
            "request_id",
            "route",
            "time",
            "model",
            "parent",
            "tenant",
            "key_id",
            "sub",
            "iss",
            "sop_instance_uid_sha256",
            "images",
            "outcome",
            "status",
            "latency_ms",
        }
        for e in events
    )
