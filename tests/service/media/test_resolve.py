"""The resolver's paths other than DICOMweb (tests/service/media/test_dicomweb.py):
data URLs of both kinds, and plain http(s) image URLs from allow-listed hosts."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from service import errors
from service.config import FetchSettings, ImageLimits
from service.media.dicom import DicomOptions
from service.media.resolve import ImageRequest, MediaResolver

LIMITS = ImageLimits(max_images_per_request=4, max_side=64)
PARAM = "messages[0].content[0]"


class Quiet(SimpleHTTPRequestHandler):
    extensions_map = {".png": "image/png", ".dcm": "application/dicom", ".txt": "text/plain"}

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("files")
    Image.new("RGB", (200, 100), (0, 128, 255)).save(root / "wide.png")
    (root / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (root / "note.txt").write_text("not an image")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def resolver():
    media = MediaResolver(LIMITS, FetchSettings(allowed_hosts=["127.0.0.1"]), [])
    yield media
    await media.aclose()


async def test_png_url_from_an_allow_listed_host(files, resolver):
    resolved = await resolver.resolve(ImageRequest(files + "/wide.png", None, PARAM))
    [image] = resolved.images
    assert (image.width, image.height) == (64, 32)  # long side capped, aspect kept
    assert resolved.info is None


async def test_dicom_url_from_an_allow_listed_host(files, resolver):
    resolved = await resolver.resolve(
        ImageRequest(files + "/ct.dcm", DicomOptions(window="bone"), PARAM)
    )
    assert resolved.info["frames"][0]["window"]["preset"] == "bone"
    assert resolved.images[0].width == 64


async def test_text_url_is_refused(files, resolver):
    with pytest.raises(errors.InvalidRequest) as info:
        await resolver.resolve(ImageRequest(files + "/note.txt", None, PARAM))
    assert info.value.code == "unsupported_image_type"


async def test_no_allow_list_means_no_remote_urls(files):
    media = MediaResolver(LIMITS, FetchSettings(), [])
    try:
        with pytest.raises(errors.ImageFetchFailed) as info:
            await media.resolve(ImageRequest(files + "/wide.png", None, PARAM))
    finally:
        await media.aclose()
    assert info.value.code == "image_url_not_allowed"


async def test_data_urls_of_both_kinds(resolver):
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "PNG")
    png = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    dicom = (
        "data:application/dicom;base64,"
        + base64.b64encode(Path(get_testdata_file("MR_small.dcm")).read_bytes()).decode()
    )
    assert (await resolver.resolve(ImageRequest(png, None, PARAM))).info is None
    resolved = await resolver.resolve(ImageRequest(dicom, None, PARAM))
    assert resolved.info["frames"][0]["window"]["source"] == "file"
    assert resolved.sop_instance_uid
