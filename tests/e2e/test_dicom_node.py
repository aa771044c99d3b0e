"""The DICOM node end to end against a real Orthanc with its DICOM server on (loopback).

`gmai-vl serve --engine fake --dicom-port P` runs as a child process (so a test can
kill -9 it); Orthanc sends studies to it with `POST /modalities/{name}/store`;
the routing rules read CT studies from ORTHANC and send the SR back to Orthanc by
C-STORE, where the test finds it over QIDO-RS. Hostile peers are pynetdicom SCUs.
Every log line the node writes goes to a file the PHI test reads.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from service.security.keys import KeyFile
from tests.dicom_node import (
    QUIET,
    Node,
    echo,
    referenced_sops,
    scu_store,
    sr_instances,
    upload,
    wait_sr,
)
from tests.dicom_study import PHI_MARKERS, make_study, malformed_instance
from tests.orthanc import OrthancServer


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-dimse"), dicom=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node(pacs, tmp_path_factory) -> Iterator[Node]:
    running = Node(tmp_path_factory.mktemp("node"), pacs).start()
    try:
        yield running
    finally:
        running.stop()


def test_echo_from_orthanc(pacs, node):
    assert pacs.echo(node.modality).status_code == 200


def test_multi_series_study_is_read_and_its_sr_stored_in_orthanc(pacs, node):
    study = make_study([("CT", 3), ("CT", 2), ("MR", 2)])
    upload(pacs, study.files)
    before = len(node.read_ids())
    r = pacs.send_study(node.modality, study.study_instance_uid)
    assert r.status_code == 200, r.text
    [read] = node.wait_reads(before + 1)[before:]
    assert read["status"] == "completed", read
    assert read["source"] == "dimse" and read["calling_ae"] == "ORTHANC"
    assert read["study_instance_uid"] == study.study_instance_uid
    modalities = _series_of(study)
    ct = {uid for uid, (_, m) in zip(study.sop_instance_uids, modalities, strict=True) if m == "CT"}
    assert len(read["instances"]) == 2 and set(read["instances"]) <= ct  # one per CT series
    [sr] = wait_sr(pacs, study.study_instance_uid)
    assert referenced_sops(pacs, study.study_instance_uid, sr) == set(read["instances"])
    assert read["sr"]["stored"] is True
    # the SR stays downloadable from the node too
    data = httpx.get(f"{node.url}/v1/dicom/reads/{read['id']}/sr").content
    assert dcmread(io.BytesIO(data)).Modality == "SR"
    # a PACS that forwards everything sends our SR back: accepted, never read (no loop)
    no_images = node.metric('gmaivl_dicom_studies_total{outcome="no_images"}')
    sop = sr["00080018"]["Value"][0]
    assert pacs.send_study(node.modality, sop, kind="Instance").status_code == 200
    deadline = time.monotonic() + QUIET + 10
    while node.metric('gmaivl_dicom_studies_total{outcome="no_images"}') == no_images:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len(node.read_ids()) == before + 1


def _series_of(study) -> list[tuple[str, str]]:
    out = []
    for data in study.files:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        out.append((str(ds.SeriesInstanceUID), str(ds.Modality)))
    return out


def test_a_study_no_rule_reads_is_not_read(pacs, node):
    study = make_study([("MR", 2)])
    upload(pacs, study.files)
    before = len(node.read_ids())
    ignored = node.metric('gmaivl_dicom_studies_total{outcome="ignored"}')
    assert pacs.send_study(node.modality, study.study_instance_uid).status_code == 200
    deadline = time.monotonic() + QUIET + 10
    while node.metric('gmaivl_dicom_studies_total{outcome="ignored"}') == ignored:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len(node.read_ids()) == before
    assert sr_instances(pacs, study.study_instance_uid) == []


def test_malformed_dataset_fails_alone(node, tmp_path, monkeypatch):
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the file's bytes
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="GMAIVL")
    assert assoc.send_c_store(malformed_instance(tmp_path / "bad.dcm")).Status >= 0xA000
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    good = make_study([("MR", 1)]).files[0]  # the association goes on (MR: not read)
    assert assoc.send_c_store(dcmread(io.BytesIO(good))).Status in (0x0000, 0x0122)
    assoc.release()
    assert echo(node.dicom_port)
    assert node.metric('gmaivl_dicom_instances_received_total{outcome="malformed"}') >= 1


def test_unknown_calling_ae_is_rejected(node):
    assert not echo(node.dicom_port, calling="INTRUDER")
    assert echo(node.dicom_port)


def test_aborted_association_reads_nothing_until_the_quiet_period_ends(pacs, node):
    study = make_study([("CT", 6)])
    before = len(node.read_ids())
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="GMAIVL")
    for data in study.files[:3]:
        assert assoc.send_c_store(dcmread(io.BytesIO(data))).Status == 0
    assoc.abort()
    sent = time.monotonic()
    assert echo(node.dicom_port)  # the node keeps serving
    while time.monotonic() - sent < QUIET * 0.6:
        assert len(node.read_ids()) == before  # incomplete: not read yet
        time.sleep(0.05)
    [read] = node.wait_reads(before + 1)[before:]
    assert read["status"] == "completed" and len(read["instances"]) == 1


def test_200_instances_over_4_associations_are_stored_and_read_once(pacs, node):
    study = make_study([("CT", 50), ("CT", 50), ("CT", 50), ("CT", 50)])
    before = len(node.read_ids())
    results: list[list[int]] = []
    chunks = [study.files[i::4] for i in range(4)]
    threads = [threading.Thread(target=lambda c=c: results.append(scu_store(node.dicom_port, c)))
               for c in chunks]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [50, 50, 50, 50]
    assert all(s == 0 for r in results for s in r)
    [read] = node.wait_reads(before + 1)[before:]
    assert read["status"] == "completed" and len(read["instances"]) == 3  # max_images
    time.sleep(QUIET + 0.5)
    assert len(node.read_ids()) == before + 1  # read once
    assert len(wait_sr(pacs, study.study_instance_uid)) == 1


def test_an_sr_the_pacs_never_takes_fails_the_read_and_stays_downloadable(node):
    study = make_study([("CT", 2)])
    before = len(node.read_ids())
    assert scu_store(node.dicom_port, study.files, calling="BROKEN") == [0, 0]
    [read] = node.wait_reads(before + 1)[before:]
    assert read["status"] == "failed" and read["error"]["code"] == "sr_store_failed", read
    assert read["sr"]["stored"] is False and read["answer"]
    data = httpx.get(f"{node.url}/v1/dicom/reads/{read['id']}/sr").content
    assert dcmread(io.BytesIO(data)).SOPInstanceUID == read["sr"]["sop_instance_uid"]
    assert node.metric('gmaivl_dicom_sr_sends_total{outcome="failed"}') >= 1
    assert node.metric('gmaivl_dicom_sr_sends_total{outcome="retried"}') >= 2


def test_with_keys_on_a_read_belongs_to_its_rules_tenant(pacs, tmp_path):
    keys = KeyFile()
    radiology, other = keys.create("radiology"), keys.create("cardiology")
    keys.save(tmp_path / "keys.json")
    env = {"GMAIVL_AUTH": "keys", "GMAIVL_API_KEYS_FILE": str(tmp_path / "keys.json")}
    # a rule naming a tenant the keys file lacks: the node refuses to start
    (tmp_path / "a").mkdir()
    lacking = Node(tmp_path / "a", pacs, tenant="oncology", **env)
    with pytest.raises(RuntimeError):
        lacking.start()
    assert "tenant 'oncology' is not in the keys file" in lacking.log.read_text()
    (tmp_path / "b").mkdir()
    node = Node(tmp_path / "b", pacs, tenant="radiology", **env).start()
    try:
        assert scu_store(node.dicom_port, make_study([("CT", 2)]).files) == [0, 0]
        [read] = node.wait_reads(1, key=radiology)
        assert read["status"] == "completed" and read["source"] == "dimse", read
        url = f"{node.url}/v1/dicom/reads/{read['id']}"
        assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
        assert httpx.get(url).status_code == 401
    finally:
        node.stop()


def test_full_spool_answers_out_of_resources(pacs, tmp_path):
    small = Node(tmp_path, pacs, GMAIVL_DICOM_SPOOL_MAX_BYTES="60000").start()
    try:
        study = make_study([("CT", 12)])
        statuses = scu_store(small.dicom_port, study.files)
        assert statuses[0] == 0 and statuses[-1] == 0xA700
        assert echo(small.dicom_port)
        text = httpx.get(small.url + "/metrics").text
        assert 'gmaivl_dicom_instances_received_total{outcome="out_of_resources"}' in text
    finally:
        small.stop()


def test_killed_mid_spool_and_restarted_finishes_the_read(pacs, tmp_path):
    node = Node(tmp_path, pacs).start()
    try:
        study = make_study([("CT", 40)])
        upload(pacs, study.files)
        sender = threading.Thread(
            target=lambda: pacs.send_study(node.modality, study.study_instance_uid), daemon=True
        )
        sender.start()
        spool = tmp_path / "spool"
        deadline = time.monotonic() + 30
        while sum(1 for _ in spool.rglob("*.dcm")) < 10:  # mid-spool
            assert time.monotonic() < deadline
            time.sleep(0.01)
        node.kill9()
        sender.join(timeout=30)
        node.start()  # the same spool: the study's quiet period runs on
        [read] = node.wait_reads(1, timeout=30)
        assert read["status"] == "completed"
        assert len(wait_sr(pacs, study.study_instance_uid)) == 1
    finally:
        node.stop()


def test_phi_markers_reach_no_log_metric_or_read(pacs, node):
    """Runs last in this module: everything above wrote to the node's log."""
    log = node.log.read_text(errors="replace")
    metrics = httpx.get(node.url + "/metrics").text
    reads = json.dumps([httpx.get(f"{node.url}/v1/dicom/reads/{i}").json()
                        for i in node.read_ids()])  # fmt: skip
    assert node.read_ids()
    for marker in PHI_MARKERS:
        assert marker not in log
        assert marker not in metrics
        assert marker not in reads
