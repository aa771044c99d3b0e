"""A DICOM node under test (`gmai-vl serve --dicom-port` as a child process) and the
peers that talk to it: pynetdicom SCUs, and Orthanc's QIDO-RS to find the SRs.
Used by tests/e2e/test_dicom_node.py and loadtest/bench_dicom_node.py."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from service.processes import free_port, wait_ready
from tests.orthanc import OrthancServer

QUIET = 1.5  # seconds: the study quiet period the node runs with here


def rules_file(path: Path, pacs: OrthancServer, model: str = "fake", tenant: str = "") -> Path:
    """The test rules; `tenant` (keys on) names the reads' tenant."""
    owner = f", tenant: {tenant}" if tenant else ""
    path.write_text(f"""
rules:
  - name: broken-pacs
    match: {{calling_ae: BROKEN}}
    read: {{model: {model}{owner}}}
    send_to: {{ae_title: NOBODY, host: 127.0.0.1, port: {free_port()}}}
  - name: chest-ct
    match: {{calling_ae: [ORTHANC, MODALITY], modality: CT}}
    read: {{model: {model}, prompt: "Findings?", priority: urgent, max_images: 3{owner}}}
    send_to: {{ae_title: {pacs.aet}, host: 127.0.0.1, port: {pacs.dicom_port}}}
  - name: rest
    match: {{}}
    ignore: true
""")
    return path


class Node:
    """`gmai-vl serve --dicom-port` as a child process; restartable on the same spool.
    `serve_flags` pick the engine (default: the fake engine, served as `fake`)."""

    def __init__(
        self,
        workdir: Path,
        pacs: OrthancServer,
        serve_flags: tuple[str, ...] = ("--engine", "fake", "--served-model-name", "fake"),
        model: str = "fake",
        command: str = "serve",
        tenant: str = "",
        **env: str,
    ) -> None:
        self.command = command  # or "dicom-node" (Redis mode: serve_flags name the Redis URL)
        self.serve_flags = list(serve_flags)
        self.workdir = workdir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = workdir / "node.log"
        self.env = {
            **os.environ,
            "GMAIVL_AUTH": "off",
            "GMAIVL_FAKE_TOKEN_INTERVAL": "0.001",
            "GMAIVL_DICOM_HOST": "127.0.0.1",
            "GMAIVL_DICOM_ALLOWED_CALLING_AETS": "ORTHANC,MODALITY,BROKEN",
            "GMAIVL_DICOM_RULES_FILE": str(rules_file(workdir / "rules.yaml", pacs, model, tenant)),
            "GMAIVL_DICOM_SPOOL_DIR": str(workdir / "spool"),
            "GMAIVL_DICOM_STUDY_QUIET_SECONDS": str(QUIET),
            "GMAIVL_REQUEST_TIMEOUT": "120",
            "GMAIVL_DICOM_SEND_BACKOFF": "0.2",
            "GMAIVL_DICOM_SEND_MAX_ATTEMPTS": "3",
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.modality = f"gmaivl{self.dicom_port}"  # Orthanc's name for this node
        pacs.add_modality(self.modality, "GMAIVL", self.dicom_port)

    def start(self) -> Node:
        flags = [*self.serve_flags, "--port", str(self.http_port),
                 "--dicom-port", str(self.dicom_port)]  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", self.command, *flags],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_ready(self.url, process=self.process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the SCP opens beside the HTTP port
            if echo(self.dicom_port):
                return self
            time.sleep(0.05)
        raise TimeoutError("the DICOM port did not answer")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def read_ids(self) -> list[str]:
        return re.findall(r"-> (read_[0-9a-f]{32})", self.log.read_text(errors="replace"))

    def wait_reads(
        self, count: int, timeout: float = 30, url: str | None = None, key: str | None = None
    ) -> list[dict]:
        """The node's reads once `count` exist and all ended (read from `url`: another
        gateway, or the node's own HTTP port; with API key `key` when keys are on)."""
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        while time.monotonic() < deadline:
            ids = self.read_ids()
            if len(ids) >= count:
                base = url or self.url
                reads = [
                    httpx.get(f"{base}/v1/dicom/reads/{i}", headers=headers).json() for i in ids
                ]
                if all(r["status"] in ("completed", "failed") for r in reads):
                    return reads
            time.sleep(0.1)
        raise TimeoutError(f"{count} reads did not end: {self.read_ids()}")

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        found = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
        return sum(found)


def echo(port: int, calling: str = "MODALITY") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 30  # a loaded machine is slow, not a refusal
    assoc = ae.associate("127.0.0.1", port, ae_title="GMAIVL")
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().Status == 0
    assoc.release()
    return ok


def scu_store(port: int, files: list[bytes], calling: str = "MODALITY") -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="GMAIVL")
    assert assoc.is_established
    statuses = [assoc.send_c_store(dcmread(io.BytesIO(d))).Status for d in files]
    assoc.release()
    return statuses


def upload(pacs: OrthancServer, files: list[bytes]) -> None:
    for data in files:
        pacs.upload(data)


def sr_instances(pacs: OrthancServer, study_uid: str) -> list[dict]:
    r = httpx.get(
        f"{pacs.dicomweb}/studies/{study_uid}/instances",
        params={"Modality": "SR"},
        auth=pacs.auth,
        timeout=10,
    )
    return r.json() if r.status_code == 200 and r.content else []


def wait_sr(pacs: OrthancServer, study_uid: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sr_instances(pacs, study_uid)
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError("no SR arrived in the PACS")


def referenced_sops(pacs: OrthancServer, study_uid: str, sr: dict) -> set[str]:
    series = sr["0020000E"]["Value"][0]
    sop = sr["00080018"]["Value"][0]
    r = httpx.get(
        f"{pacs.dicomweb}/studies/{study_uid}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        auth=pacs.auth,
        timeout=10,
    )
    body = r.content
    start = body.index(b"DICM") - 128
    ds = dcmread(io.BytesIO(body[start:]))
    found = set()
    for item in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series_item in item.ReferencedSeriesSequence:
            for ref in series_item.ReferencedSOPSequence:
                found.add(str(ref.ReferencedSOPInstanceUID))
    return found
