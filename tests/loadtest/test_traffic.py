from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from loadtest.traffic import builtin_images, chat_body, load_images


def test_builtin_set_has_dicom_and_png():
    images = builtin_images()
    assert {i.is_dicom for i in images} == {True, False}
    assert all(i.data_url.startswith("data:") for i in images)


def test_image_set_from_a_directory(tmp_path):
    Image.new("L", (32, 32)).save(tmp_path / "a.png")
    (tmp_path / "b.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (tmp_path / "notes.txt").write_text("ignored")
    images = load_images(str(tmp_path))
    assert [(i.name, i.is_dicom) for i in images] == [("a.png", False), ("b.dcm", True)]
    assert images[0].data_url.startswith("data:image/png;base64,")


def test_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        load_images(str(tmp_path))


def test_chat_body_is_an_openai_request_with_the_image_inline():
    (image,) = [i for i in builtin_images() if i.name == "colour.png"]
    body = chat_body("m", image, max_tokens=4, stream=True)
    assert body["stream_options"] == {"include_usage": True}
    parts = body["messages"][0]["content"]
    assert parts[0]["image_url"]["url"] == image.data_url
    assert parts[1]["type"] == "text"
