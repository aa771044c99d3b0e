"""The SCP against a real pynetdicom SCU on loopback: who may associate, what each
C-STORE answers, and that a bad peer leaves the node serving."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from service.config import DicomNodeSettings
from service.dicom_node.scp import DicomServer
from service.dicom_node.spool import Spool
from service.metrics import ServiceMetrics
from tests.dicom_study import make_study, malformed_instance


def node(tmp_path, **kw):
    defaults = {"host": "127.0.0.1", "allowed_calling_aets": ["MODALITY"]}
    settings = DicomNodeSettings(**(defaults | kw))
    spool = Spool(tmp_path / "spool", settings.spool_max_bytes, 60).open()
    server = DicomServer(settings, spool, ServiceMetrics())
    server.start(port=0)
    return server


@pytest.fixture
def scp(tmp_path):
    server = node(tmp_path, spool_max_bytes=150_000)
    yield server
    server.stop()


def associate(port, calling="MODALITY", called="GMAIVL"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.network_timeout = 30  # a loaded machine is slow, not a refusal
    return ae.associate("127.0.0.1", port, ae_title=called)


def test_echo_and_store(scp):
    assoc = associate(scp.port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    study = make_study([("CT", 2)])
    for data in study.files:
        assert assoc.send_c_store(dcmread(io.BytesIO(data))).Status == 0x0000
    assoc.release()
    [batch] = scp.spool.batches()
    assert batch.study_instance_uid == study.study_instance_uid
    assert batch.calling_aes == ["MODALITY"] and batch.instances == 2


def test_unknown_calling_or_called_ae_is_rejected(scp):
    assoc = associate(scp.port, calling="STRANGER")
    assert assoc.is_rejected
    assoc = associate(scp.port, called="SOMEONE")
    assert assoc.is_rejected
    assert associate(scp.port).is_established  # the node keeps serving


def test_empty_allow_list_refuses_everyone(tmp_path):
    server = node(tmp_path, allowed_calling_aets=[])
    try:
        assert associate(server.port).is_rejected
    finally:
        server.stop()


def test_peer_address_outside_the_networks_is_refused(tmp_path):
    server = node(tmp_path, allowed_peer_networks=["10.0.0.0/8"])
    try:
        assoc = associate(server.port)
        assert not assoc.is_established
        value = server.metrics.dicom_associations.labels("refused_address")._value.get()
        assert value == 1
    finally:
        server.stop()
    server = node(tmp_path, allowed_peer_networks=["127.0.0.0/8"])
    try:
        assert associate(server.port).is_established
    finally:
        server.stop()


def test_malformed_dataset_fails_alone(scp, tmp_path, monkeypatch):
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's bytes
    good = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    ds = dcmread(io.BytesIO(good))
    ds.StudyInstanceUID = "not-a-uid"
    bad_uid = io.BytesIO()
    ds.save_as(bad_uid)
    garbage = malformed_instance(tmp_path / "garbage.dcm")
    assoc = associate(scp.port)
    assert assoc.send_c_store(dcmread(io.BytesIO(bad_uid.getvalue()))).Status == 0xC000
    status = assoc.send_c_store(garbage)
    assert status.Status >= 0xA000  # a failure status for that instance only
    assert assoc.send_c_store(dcmread(io.BytesIO(good))).Status == 0x0000
    assoc.release()
    assert [b.instances for b in scp.spool.batches()] == [1]


def test_full_spool_answers_out_of_resources(scp):
    study = make_study([("CT", 20)])  # ~10 kB each... until the 150 kB quota
    assoc = associate(scp.port)
    statuses = [assoc.send_c_store(dcmread(io.BytesIO(d))).Status for d in study.files]
    assoc.release()
    assert 0x0000 in statuses and 0xA700 in statuses
    first_refused = statuses.index(0xA700)
    assert all(s == 0xA700 for s in statuses[first_refused:])
    assert scp.spool.used <= 150_000
    assert scp.metrics.dicom_instances.labels("out_of_resources")._value.get() >= 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl): the node's, and the peer's."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_associate(port: int, cert: Path, key: Path | None):
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    if key is not None:
        context.load_cert_chain(cert, key)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 30  # a loaded machine is slow, not a refusal
    return ae.associate("127.0.0.1", port, ae_title="GMAIVL", tls_args=(context, "127.0.0.1"))


def test_dicom_tls_with_client_certificates(tmp_path, certificate):
    cert, key = certificate
    server = node(tmp_path, tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert, acse_timeout=2)
    try:
        assoc = tls_associate(server.port, cert, key)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert not associate(server.port).is_established  # plain TCP: no association
        assert not tls_associate(server.port, cert, None).is_established  # no client cert
        silent = socket.create_connection(("127.0.0.1", server.port))  # says nothing
        assert tls_associate(server.port, cert, key).is_established  # others still connect
        silent.close()
    finally:
        server.stop()


def test_association_limit(tmp_path):
    server = node(tmp_path, max_associations=1)
    try:
        first = associate(server.port)
        assert first.is_established
        second = associate(server.port)
        assert second.is_rejected  # transient: local limit exceeded
        first.release()
        deadline = time.monotonic() + 5  # the released association's thread ends first
        while not (third := associate(server.port)).is_established:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        third.release()
    finally:
        server.stop()
