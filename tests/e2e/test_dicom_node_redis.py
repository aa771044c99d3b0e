"""`gmai-vl dicom-node` in Redis mode, beside a gateway and a worker: its reads are
ordinary reads any gateway answers for, and a node killed -9 while a read runs
resumes the same read from its spool when it comes back (the record is in Redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from service.processes import Cluster
from tests.dicom_node import Node, scu_store, wait_sr
from tests.dicom_study import make_study
from tests.orthanc import OrthancServer


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-dimse-redis"), dicom=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    # 256 tokens at 20 ms: a read generates for ~5 s, long enough to kill the node in it
    made = Cluster(tmp_path, GMAIVL_FAKE_TOKEN_INTERVAL="0.02", GMAIVL_READ_LEASE="1")
    try:
        made.add_worker(model="fake")
        yield made
    finally:
        made.close()


def dicom_node(tmp_path, pacs, cluster) -> Node:
    flags = ("--redis-url", cluster.redis_url, "--served-model-name", "fake")
    return Node(tmp_path, pacs, serve_flags=flags, command="dicom-node",
                GMAIVL_READ_LEASE="1")  # fmt: skip


def test_a_node_read_is_an_ordinary_read_and_survives_kill_9(pacs, cluster, tmp_path):
    gateway = cluster.add_gateway(model="fake")
    node = dicom_node(tmp_path, pacs, cluster).start()
    try:
        study = make_study([("CT", 4), ("CT", 3)])
        for data in study.files:
            pacs.upload(data)
        assert scu_store(node.dicom_port, study.files, calling="ORTHANC") == [0] * 7
        deadline = time.monotonic() + 30
        while not node.read_ids():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [read_id] = node.read_ids()
        url = f"{gateway}/v1/dicom/reads/{read_id}"
        while httpx.get(url).json()["status"] != "running":  # generating
            assert time.monotonic() < deadline
            time.sleep(0.05)
        node.kill9()
        time.sleep(1.5)  # past the lease: a gateway would have claimed a PACS read by now
        assert httpx.get(url).json()["status"] == "running"  # nobody took it over
        node.start()
        [read] = node.wait_reads(1, timeout=60, url=gateway)  # the same read, resumed
        assert read["id"] == read_id and read["status"] == "completed", read
        assert read["source"] == "dimse" and read["calling_ae"] == "ORTHANC"
        assert len(read["instances"]) == 2
        assert "runs again" in node.log.read_text()
        assert len(wait_sr(pacs, study.study_instance_uid)) == 1
        time.sleep(1)
        assert len(wait_sr(pacs, study.study_instance_uid)) == 1  # sent once
    finally:
        node.stop()
