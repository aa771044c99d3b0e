"""DICOMweb against a real Orthanc: URL ownership and shapes, multipart parsing, and
instances and renderings fetched with the PACS's credentials."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from service import errors
from service.config import FetchSettings, ImageLimits, PacsEntry
from service.media.dicom import DicomOptions, dicom_to_rgb
from service.media.dicomweb import Pacs, first_dicom_part
from service.media.fetch import Fetched
from service.media.resolve import ImageRequest, MediaResolver

LIMITS = ImageLimits(max_images_per_request=4, max_side=1024)
PARAM = "messages[0].content[0]"


def file_bytes(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def pacs(base_url: str = "http://127.0.0.1:8042/dicom-web", **extra) -> Pacs:
    return Pacs.from_entry(PacsEntry(name="p", base_url=base_url, **extra))


def test_pacs_owns_only_urls_under_its_base():
    p = pacs()
    assert p.owns(httpx.URL("http://127.0.0.1:8042/dicom-web/studies/1/series/2/instances/3"))
    assert not p.owns(httpx.URL("http://127.0.0.1:8042/dicom-webx/studies/1"))
    assert not p.owns(httpx.URL("http://127.0.0.1:8043/dicom-web/studies/1"))
    assert not p.owns(httpx.URL("https://127.0.0.1:8042/dicom-web/studies/1"))
    assert not p.owns(httpx.URL("http://localhost:8042/dicom-web/studies/1"))


def test_url_shapes():
    p = pacs()
    base = "http://127.0.0.1:8042/dicom-web/studies/1.2/series/3.4/instances/5.6"
    assert p.kind(httpx.URL(base), PARAM) == "instance"
    assert p.kind(httpx.URL(base + "/rendered"), PARAM) == "rendered"
    dots = "http://127.0.0.1:8042/dicom-web/studies/%2e%2e/series/%2E%2E/instances/%2e%2e"
    long_uid = base.rsplit("/", 1)[0] + "/1" + ".2" * 32  # 65 characters
    for bad in (base.rsplit("/instances", 1)[0], base + "/frames/1", base + "/../x", dots,
                dots + "/rendered", base.replace("5.6", "5..6"), base.replace("1.2", ".1"),
                long_uid):  # fmt: skip
        with pytest.raises(errors.InvalidRequest) as info:
            p.kind(httpx.URL(bad), PARAM)
        assert info.value.code == "invalid_dicomweb_url"


def test_credentials_become_an_authorization_header():
    basic = pacs(username="u", password="p").headers["Authorization"]
    assert basic == "Basic dTpw"
    assert pacs(bearer_token="t0k").headers["Authorization"] == "Bearer t0k"
    assert "secret-pw" not in repr(PacsEntry(name="x", base_url="http://h/", password="secret-pw"))


def test_first_dicom_part_of_a_multipart_answer():
    body = (
        b"--b1\r\nContent-Type: application/json\r\n\r\n{}\r\n"
        b"--b1\r\nContent-Type: application/dicom\r\n\r\nDICOMBYTES\r\n--b1--\r\n"
    )
    fetched = Fetched('multipart/related; type="application/dicom"; boundary=b1', "", body)
    assert first_dicom_part(fetched, PARAM) == b"DICOMBYTES"
    with pytest.raises(errors.UnprocessableImage):
        first_dicom_part(Fetched("multipart/related; boundary=zz", "", body), PARAM)


@pytest.fixture
async def resolver(orthanc):
    media = MediaResolver(LIMITS, FetchSettings(), [PacsEntry(**orthanc.pacs_entry())])
    yield media
    await media.aclose()


async def test_instance_from_orthanc_renders_like_the_file(orthanc, resolver):
    data = file_bytes("693_J2KI.dcm")
    resolved = await resolver.resolve(ImageRequest(orthanc.instance_url(data), None, PARAM))
    expected = dicom_to_rgb(data, DicomOptions(), LIMITS, PARAM).frames[0].rgb
    [image] = resolved.images
    assert (image.width, image.height) == (512, 512)
    assert np.array_equal(np.frombuffer(image.rgb, np.uint8).reshape(512, 512, 3), expected)
    assert resolved.info["frames"] == [
        {
            "number": 1,
            "window": {"center": 40.0, "width": 100.0, "function": "LINEAR", "source": "file"},
        }
    ]
    assert resolved.sop_instance_uid is not None


async def test_frames_of_a_cine_from_orthanc(orthanc, resolver):
    url = orthanc.instance_url(file_bytes("examples_ybr_color.dcm"))
    resolved = await resolver.resolve(ImageRequest(url, DicomOptions(frames=(2, 3)), PARAM))
    assert [f["number"] for f in resolved.info["frames"]] == [2, 3]
    assert resolved.info["frame_count"] == 30 and len(resolved.images) == 2


async def test_rendered_by_orthanc_with_a_preset(orthanc, resolver):
    url = orthanc.instance_url(file_bytes("CT_small.dcm")) + "/rendered"
    resolved = await resolver.resolve(ImageRequest(url, DicomOptions(window="lung"), PARAM))
    [image] = resolved.images
    assert (image.width, image.height) == (128, 128)
    assert resolved.info["rendered_by"] == "pacs"
    assert resolved.info["window"]["preset"] == "lung"


async def test_wrong_credentials_are_a_400_without_the_secret(orthanc):
    entry = PacsEntry(**{**orthanc.pacs_entry(), "password": "wrong-password"})
    media = MediaResolver(LIMITS, FetchSettings(), [entry])
    try:
        with pytest.raises(errors.ImageFetchFailed) as info:
            await media.resolve(
                ImageRequest(orthanc.instance_url(file_bytes("CT_small.dcm")), None, PARAM)
            )
    finally:
        await media.aclose()
    assert "401" in info.value.message and "wrong-password" not in info.value.message


async def test_unknown_instance_is_a_400(orthanc, resolver):
    url = orthanc.dicomweb + "/studies/1.2.3/series/4.5.6/instances/7.8.9"
    with pytest.raises(errors.ImageFetchFailed) as info:
        await resolver.resolve(ImageRequest(url, None, PARAM))
    assert "404" in info.value.message


async def test_orthanc_port_under_another_host_name_is_not_fetched(orthanc, resolver):
    url = orthanc.instance_url(file_bytes("CT_small.dcm")).replace("127.0.0.1", "localhost")
    with pytest.raises(errors.ImageFetchFailed) as info:
        await resolver.resolve(ImageRequest(url, None, PARAM))
    assert info.value.code == "image_url_not_allowed"
