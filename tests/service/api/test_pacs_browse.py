"""Study search through the gateway (QIDO-RS proxied to the configured PACS) against
the test Orthanc: filters, series, instances with the URL a chat part takes, and
what never crosses (credentials, other hosts, unchecked filter values)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.config import PacsEntry, Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from tests.conftest import ThreadedServer
from tests.orthanc import PASSWORD, OrthancServer


def header(name: str):
    return dcmread(get_testdata_file(name), stop_before_pixels=True)


CT = header("CT_small.dcm")
MR = header("MR_small.dcm")


@pytest.fixture(scope="module")
def gateway(orthanc: OrthancServer) -> Iterator[str]:
    settings = Settings(
        engine="fake", served_model_name="browse", pacs=[PacsEntry(**orthanc.pacs_entry())]
    )
    with ThreadedServer(build_embedded(settings, FakeEngine()).app) as server:
        yield server.base_url


def get(base_url: str, path: str, **params) -> httpx.Response:
    return httpx.get(base_url + path, params=params, timeout=30)


def test_the_configured_pacs_is_listed_without_credentials(gateway, orthanc):
    r = get(gateway, "/v1/dicom/pacs")
    assert r.json() == {
        "object": "list",
        "data": [{"name": "test-pacs", "base_url": orthanc.dicomweb}],
    }
    assert PASSWORD not in r.text


def test_search_by_modality_and_date(gateway):
    every = get(gateway, "/v1/dicom/studies").json()["data"]
    assert {CT.StudyInstanceUID, MR.StudyInstanceUID} <= {s["study_instance_uid"] for s in every}
    mr = get(gateway, "/v1/dicom/studies", ModalitiesInStudy="MR").json()
    assert mr["pacs"] == "test-pacs"
    # The test PACS is shared with other tests (which add studies and SR series): the
    # filters must keep what matches and drop what does not.
    by_uid = {s["study_instance_uid"]: s for s in mr["data"]}
    assert MR.StudyInstanceUID in by_uid and CT.StudyInstanceUID not in by_uid
    assert all("MR" in s["modalities"] for s in mr["data"])
    assert by_uid[MR.StudyInstanceUID]["study_date"] == MR.StudyDate
    dated = get(gateway, "/v1/dicom/studies", StudyDate=f"{CT.StudyDate}-{CT.StudyDate}").json()
    assert CT.StudyInstanceUID in {s["study_instance_uid"] for s in dated["data"]}
    # Other tests store studies in the same PACS (some reuse CT_small's study with
    # other dates), so the check is that the range keeps CT and drops the MR study.
    assert MR.StudyDate != CT.StudyDate
    assert MR.StudyInstanceUID not in {s["study_instance_uid"] for s in dated["data"]}
    assert get(gateway, "/v1/dicom/studies", limit=1).json()["data"].__len__() == 1
    nothing = get(gateway, "/v1/dicom/studies", StudyDate="19000101").json()
    assert nothing["data"] == []


def test_series_and_instances_lead_to_a_url_the_chat_api_takes(gateway):
    series = get(gateway, f"/v1/dicom/studies/{CT.StudyInstanceUID}/series").json()["data"]
    by_uid = {s["series_instance_uid"]: s for s in series}  # reads may have added SR series
    assert by_uid[CT.SeriesInstanceUID]["modality"] == "CT"
    path = f"/v1/dicom/studies/{CT.StudyInstanceUID}/series/{CT.SeriesInstanceUID}/instances"
    [instance] = [
        i for i in get(gateway, path).json()["data"] if i["sop_instance_uid"] == CT.SOPInstanceUID
    ]
    assert instance["rows"] == 128 and instance["columns"] == 128
    answer = httpx.post(
        gateway + "/v1/chat/completions",
        json={
            "model": "browse",
            "max_tokens": 2,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": instance["url"]}}],
                }
            ],
        },
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["dicom"][0]["frame_count"] == 1
    # The same URL renders through the same pipeline (the console's thumbnails).
    shown = httpx.post(
        gateway + "/v1/images/render",
        json={"image_url": {"url": instance["url"]}, "max_side": 64},
        timeout=30,
    ).json()
    local = base64.b64encode(Path(get_testdata_file("CT_small.dcm")).read_bytes()).decode()
    same = httpx.post(
        gateway + "/v1/images/render",
        json={"image_url": {"url": "data:application/dicom;base64," + local}, "max_side": 64},
        timeout=30,
    ).json()
    assert shown["images"] == same["images"] and shown["dicom"] == same["dicom"]


def test_bad_filters_uids_and_names_are_400_without_echoing_them(gateway):
    for path, params, param in (
        ("/v1/dicom/studies", {"StudyDate": "yesterday"}, "StudyDate"),
        ("/v1/dicom/studies", {"ModalitiesInStudy": "CT\\MR*"}, "ModalitiesInStudy"),
        ("/v1/dicom/studies", {"limit": "5000"}, "limit"),
        ("/v1/dicom/studies", {"pacs": "elsewhere"}, "pacs"),
        ("/v1/dicom/studies/1.2.x/series", {}, "study"),
    ):
        r = get(gateway, path, **params)
        assert r.status_code == 400, (path, params)
        error = r.json()["error"]
        assert error["param"] == param
        assert not any(str(v) in error["message"] for v in params.values())
    # An encoded slash is a slash by the time routing sees it: no route, never the PACS.
    assert get(gateway, "/v1/dicom/studies/1.2.3%2F..%2F..%2Fseries/series").status_code == 404


def test_a_gateway_without_pacs_says_so():
    settings = Settings(engine="fake", served_model_name="browse")
    with ThreadedServer(build_embedded(settings, FakeEngine()).app) as server:
        assert get(server.base_url, "/v1/dicom/pacs").json()["data"] == []
        r = get(server.base_url, "/v1/dicom/studies")
        assert r.status_code == 400 and r.json()["error"]["code"] == "pacs_not_configured"


def test_a_pacs_that_fails_is_a_clear_4xx(tmp_path, orthanc):
    entry = {**orthanc.pacs_entry(), "password": "wrong"}
    settings = Settings(engine="fake", served_model_name="browse", pacs=[PacsEntry(**entry)])
    with ThreadedServer(build_embedded(settings, FakeEngine()).app) as server:
        r = get(server.base_url, "/v1/dicom/studies")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "pacs_search_failed"
    assert "wrong" not in json.dumps(r.json())
