"""Study reads in Redis mode with real processes: two `gmai-vl gateway`s, one worker
(fake engine), a real redis-server and the test Orthanc. A read submitted on one
gateway is polled on the other; the first is restarted and still answers for it;
a gateway killed mid-read has its read finished by the other."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from service.engines.fake import TOKENS
from service.processes import MODEL, Cluster, free_port, stop_process, wait_ready
from tests.e2e.test_dicom_reads import make_study
from tests.orthanc import OrthancServer


@pytest.fixture
def cluster(tmp_path, orthanc: OrthancServer) -> Iterator[Cluster]:
    made = Cluster(
        tmp_path,
        GMAIVL_PACS=json.dumps([orthanc.pacs_entry("main")]),
        GMAIVL_READ_LEASE="1.5",
        GMAIVL_FAKE_TOKEN_INTERVAL="0.02",
    )
    try:
        yield made
    finally:
        made.close()


def gateway_on(cluster: Cluster, port: int, name: str):
    process = cluster._spawn(
        ["gateway", "--redis-url", cluster.redis.url, "--served-model-name", MODEL,
         "--port", str(port)],
        name,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    cluster.gateways.append((process, url))  # the cluster stops it, whatever happens
    wait_ready(url, process=process, timeout=60)
    return process, url


def poll(url: str, read_id: str, until: tuple[str, ...], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        read = httpx.get(f"{url}/v1/dicom/reads/{read_id}", timeout=5).json()
        if read["status"] in until:
            return read
        time.sleep(0.05)
    raise TimeoutError(read)


def test_submit_on_one_poll_on_the_other_restart_the_first(cluster: Cluster, orthanc):
    study = make_study()
    for data in study.files:
        orthanc.upload(data)
    cluster.add_worker()
    port = free_port()
    first, a = gateway_on(cluster, port, "gateway-a")
    b = cluster.add_gateway()
    body = {"model": MODEL, "study_instance_uid": study.uid, "max_tokens": 6}
    r = httpx.post(a + "/v1/dicom/reads", json=body, timeout=10)
    assert r.status_code == 202, r.text
    read_id = r.json()["id"]
    done = poll(b, read_id, ("completed", "failed"))
    assert done["status"] == "completed", done["error"]
    assert done["instances"] == study.expected
    stop_process(first)
    _, a = gateway_on(cluster, port, "gateway-a2")  # the same address, a new process
    again = httpx.get(f"{a}/v1/dicom/reads/{read_id}", timeout=5).json()
    assert again == done
    sr = httpx.get(f"{a}/v1/dicom/reads/{read_id}/sr", timeout=5)
    assert sr.status_code == 200 and sr.headers["content-type"] == "application/dicom"
    assert done["sr"]["sop_instance_uid"].encode() in sr.content


def test_a_gateway_killed_mid_read_loses_nothing(cluster: Cluster, orthanc):
    study = make_study()
    for data in study.files:
        orthanc.upload(data)
    cluster.add_worker()
    port = free_port()
    first, a = gateway_on(cluster, port, "gateway-a")
    b = cluster.add_gateway()
    body = {"model": MODEL, "study_instance_uid": study.uid, "max_tokens": 150}
    read_id = httpx.post(a + "/v1/dicom/reads", json=body, timeout=10).json()["id"]
    poll(b, read_id, ("running",))
    first.kill()  # no goodbye: its read is renewed by nobody now
    first.wait()
    done = poll(b, read_id, ("completed", "failed"), timeout=60)
    assert done["status"] == "completed", done["error"]
    assert done["answer"] and done["sr"]["stored"] is True
    found = httpx.get(
        f"{orthanc.dicomweb}/studies/{study.uid}/series",
        params={"Modality": "SR"},
        auth=orthanc.auth,
    ).json()
    assert [s["0020000E"]["Value"][0] for s in found] == [done["sr"]["series_instance_uid"]]


def test_a_cancel_on_one_gateway_stops_the_read_running_on_the_other(cluster: Cluster, orthanc):
    study = make_study()
    for data in study.files:
        orthanc.upload(data)
    cluster.add_worker()
    a, b = cluster.add_gateway(), cluster.add_gateway()
    body = {"model": MODEL, "study_instance_uid": study.uid, "max_tokens": 400}
    read_id = httpx.post(a + "/v1/dicom/reads", json=body, timeout=10).json()["id"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{b}/v1/dicom/reads/{read_id}", timeout=5).json().get("answer") is None:
        read = httpx.get(f"{a}/v1/dicom/reads/{read_id}", timeout=5).json()
        if read["status"] == "running" and read["instances"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the generation is under way on the worker
    r = httpx.delete(f"{b}/v1/dicom/reads/{read_id}", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    time.sleep(1.0)  # the first gateway notices and must not overwrite the cancel
    assert httpx.get(f"{a}/v1/dicom/reads/{read_id}", timeout=5).json()["status"] == "cancelled"
    # It let go of the read at once, not at the read's deadline.
    assert "gmaivl_dicom_reads_running 0.0" in httpx.get(a + "/metrics", timeout=5).text
    found = httpx.get(
        f"{orthanc.dicomweb}/studies/{study.uid}/series",
        params={"Modality": "SR"},
        auth=orthanc.auth,
    ).json()
    assert found == []  # nothing was stored
    aborts = cluster.worker_metric(
        cluster.workers[0][1], 'gmaivl_engine_aborts_total{reason="cancelled"}'
    )
    assert aborts == 1.0


def test_a_worker_lost_mid_read_is_retried_like_any_job(cluster: Cluster, orthanc):
    study = make_study()
    for data in study.files:
        orthanc.upload(data)
    first = cluster.add_worker()
    cluster.wait_worker_metrics(first)
    gateway = cluster.add_gateway()
    body = {"model": MODEL, "study_instance_uid": study.uid, "max_tokens": 100}
    read_id = httpx.post(gateway + "/v1/dicom/reads", json=body, timeout=10).json()["id"]
    deadline = time.monotonic() + 30
    taken = 'gmaivl_queue_wait_seconds_count{lane="routine"}'
    while cluster.worker_metric(first, taken) < 1:
        assert time.monotonic() < deadline, "the worker never took the read's job"
        time.sleep(0.05)
    time.sleep(0.5)  # mid-generation (100 tokens take 2 s)
    second = cluster.add_worker()
    cluster.kill_worker(0)
    done = poll(gateway, read_id, ("completed", "failed"), timeout=60)
    assert done["status"] == "completed", done["error"]
    assert done["answer"] == "".join(TOKENS[i % len(TOKENS)] for i in range(100))
    assert cluster.worker_metric(second, "gmaivl_redeliveries_total") == 1.0
