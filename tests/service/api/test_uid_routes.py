"""One UID rule for every route that puts a UID into a DICOMweb URL: dot segments
and their look-alikes (`..`, `.`, `...`, `1..2`, `%2e%2e`) are 400 everywhere, sent
as any HTTP client can (paths verbatim, not normalized), against the real Orthanc.

Before the rule was one, `GET /v1/dicom/studies/../series/../instances` listed every
instance in the PACS: the browse client took `^[0-9.]{1,64}$` and httpx resolved
the dot segments before the PACS saw them.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.config import PacsEntry, Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.media.dicomweb import check_uid, valid_uid
from tests.conftest import ThreadedServer
from tests.orthanc import OrthancServer

BAD = ("..", ".", "...", "1..2", "%2e%2e")
CT = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
STUDY, SERIES, SOP = CT.StudyInstanceUID, CT.SeriesInstanceUID, CT.SOPInstanceUID


@pytest.fixture(scope="module")
def gateway(orthanc: OrthancServer) -> Iterator[str]:
    settings = Settings(
        engine="fake", served_model_name="uids", pacs=[PacsEntry(**orthanc.pacs_entry())]
    )
    with ThreadedServer(build_embedded(settings, FakeEngine()).app) as server:
        yield server.base_url


def raw(base_url: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """The request with its path exactly as written (http.client does not resolve dots)."""
    url = httpx.URL(base_url)
    conn = http.client.HTTPConnection(url.host, url.port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_the_rule():
    for good in ("0", "1.2.840.10008.5.1.4.1.1.2", "1.0.2", "2.25." + "1" * 40, STUDY, SOP):
        assert valid_uid(good) and check_uid(good, "study") == good
    for bad in (*BAD, "", "1.", ".1", "01.2", "1.02", "1.2.x", "1/2", "1" * 65, "1.2 3"):
        assert not valid_uid(bad), bad


@pytest.mark.parametrize("bad", BAD)
def test_browse_routes_refuse_dot_segments_as_uids(gateway, bad):
    for path in (
        f"/v1/dicom/studies/{bad}/series",
        f"/v1/dicom/studies/{bad}/series/{SERIES}/instances",
        f"/v1/dicom/studies/{STUDY}/series/{bad}/instances",
        f"/v1/dicom/studies/{bad}/series/{bad}/instances",
    ):
        status, body = raw(gateway, "GET", path)
        # 400 naming the UID, or no route at all (a path the router resolved away): never
        # a listing from the PACS.
        assert status in (400, 404), (path, status, body)
        assert "data" not in body, path
        if status == 400:
            assert body["error"]["code"] == "invalid_uid", path
            assert body["error"]["param"] in ("study", "series")


@pytest.mark.parametrize("bad", BAD)
def test_a_read_refuses_dot_segments_as_uids(gateway, bad):
    good = {"model": "uids", "study_instance_uid": STUDY, "store": False}
    for field, value in (
        ("study_instance_uid", bad),
        ("series_instance_uid", bad),
        ("sop_instance_uids", [bad]),
    ):
        status, body = raw(gateway, "POST", "/v1/dicom/reads", {**good, field: value})
        assert status == 400, (field, status, body)
        assert body["error"]["param"].startswith(field)


@pytest.mark.parametrize("bad", BAD)
def test_image_parts_refuse_dot_segments_in_a_pacs_url(gateway, orthanc, bad):
    base = orthanc.dicomweb
    for url in (
        f"{base}/studies/{bad}/series/{SERIES}/instances/{SOP}",
        f"{base}/studies/{STUDY}/series/{bad}/instances/{SOP}",
        f"{base}/studies/{STUDY}/series/{SERIES}/instances/{bad}",
        f"{base}/studies/{STUDY}/series/{SERIES}/instances/{bad}/rendered",
    ):
        part = {"type": "image_url", "image_url": {"url": url}}
        chat = {"model": "uids", "max_tokens": 2, "messages": [{"role": "user", "content": [part]}]}
        for path, body in (
            ("/v1/chat/completions", chat),
            ("/v1/images/render", {"image_url": {"url": url}}),
        ):
            status, answer = raw(gateway, "POST", path, body)
            assert status == 400, (path, url, status, answer)
