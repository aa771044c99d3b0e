"""The read's SR in a real viewer: a study read through the real gateway (embedded,
fake engine) stores its SR into the test Orthanc; OHIF 3.13 (npm's built app, served
beside Orthanc's DICOMweb on one origin: tests/ohif.py) in Debian's chromium lists the
SR series, opens it, and shows a report: the answer under "Findings", the question
under "Request", the not-for-diagnostic-use statement, the model as the observer on
lines of its own, never inside the findings.

`GMAIVL_OHIF_SCREENSHOTS=docs` writes the screenshot docs/pacs.md shows.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from service.config import PacsEntry, Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from tests.conftest import ThreadedServer
from tests.ohif import OhifServer
from tests.orthanc import OrthancServer

CHROMIUM = "/usr/bin/chromium"
MODEL = "gmai-vl-demo"
QUESTION = "Is there a fracture of the vertebra?"
SHOTS = os.environ.get("GMAIVL_OHIF_SCREENSHOTS")


def new_study(pacs: OrthancServer) -> str:
    """CT_small as a study of its own (the shared test PACS holds other reads' SRs)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    pacs.upload(buffer.getvalue())
    return str(ds.StudyInstanceUID)


@pytest.fixture(scope="module")
def read(orthanc: OrthancServer) -> dict:
    """A completed read of a fresh study, its SR stored in Orthanc over STOW-RS."""
    study = new_study(orthanc)
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        model_version="test-1",
        pacs=[PacsEntry(**orthanc.pacs_entry())],
    )
    service = build_embedded(settings, FakeEngine())
    with ThreadedServer(service.app) as server:
        body = {"model": MODEL, "study_instance_uid": study, "prompt": QUESTION, "max_tokens": 7}
        r = httpx.post(server.base_url + "/v1/dicom/reads", json=body)
        assert r.status_code == 202, r.text
        deadline, read = time.monotonic() + 30, r.json()
        while read["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, read
            time.sleep(0.05)
            read = httpx.get(server.base_url + r.headers["location"]).json()
    assert read["status"] == "completed" and read["sr"]["stored"], read
    return read


@pytest.fixture
def ohif(orthanc: OrthancServer) -> Iterator[OhifServer]:
    server = OhifServer(orthanc).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(60_000)  # the first load compiles OHIF's bundles
        try:
            yield page
        finally:
            browser.close()


def test_ohif_shows_the_answer_under_findings(page: Page, ohif: OhifServer, read: dict):
    page.goto(f"{ohif.url}/viewer?StudyInstanceUIDs={read['study_instance_uid']}")
    page.get_by_text("Skip all").click()  # OHIF's first-visit tour
    # The study browser lists our SR series by its description; a double click opens it.
    series = page.get_by_text("AI-generated report (GMAI-VL), not for diagnostic use")
    series.dblclick()

    heading = page.locator("div.font-bold", has_text="Findings")
    expect(heading).to_have_text("1.2.\u00a0Findings")
    findings = heading.locator("xpath=following-sibling::div[1]")
    expect(findings).to_have_text(read["answer"])  # the answer alone, as generated
    request = page.locator("div.font-bold", has_text="Request").locator(
        "xpath=following-sibling::div[1]"
    )
    expect(request).to_have_text(f"Request: {QUESTION}")
    report = page.locator("div.font-bold", has_text="Diagnostic Imaging Report").locator("..")
    expect(report.get_by_text("Comment:").locator("..")).to_contain_text("not for diagnostic use")
    # The model identifies itself on its own line, in the observation context.
    expect(report.get_by_text("Device Observer Name:").locator("..")).to_have_text(
        f"Device Observer Name: {MODEL}"
    )
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "pacs-ohif-sr.png"))
