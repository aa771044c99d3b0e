"""DICOM image parts through the HTTP API (fake engine, real server, openai SDK): the
`image_url.dicom` request extension and the `dicom` response extension."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import openai
import pytest
from pydicom.data import get_testdata_file

from service.config import Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from tests.conftest import ThreadedServer


def dicom_url(name: str) -> str:
    data = Path(get_testdata_file(name)).read_bytes()
    return "data:application/dicom;base64," + base64.b64encode(data).decode()


def dicom_message(url: str, dicom: dict | None = None) -> list[dict]:
    image_url: dict = {"url": url}
    if dicom is not None:
        image_url["dicom"] = dicom
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": image_url},
                {"type": "text", "text": "Findings?"},
            ],
        }
    ]


@pytest.fixture(scope="module")
def server():
    service = build_embedded(Settings(engine="fake", served_model_name="fake"), FakeEngine())
    with ThreadedServer(service.app) as running:
        yield running


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_inline_dicom_answers_with_the_frame_and_window_used(server):
    r = client(server).chat.completions.create(
        model="fake",
        messages=dicom_message(dicom_url("CT_small.dcm"), {"window": "lung"}),
        max_tokens=2,
    )
    assert r.choices[0].message.content == "The image"
    assert r.model_extra["dicom"] == [
        {
            "param": "messages[0].content[0]",
            "frame_count": 1,
            "frames": [
                {
                    "number": 1,
                    "window": {
                        "center": -600.0,
                        "width": 1500.0,
                        "function": "LINEAR",
                        "source": "preset",
                        "preset": "lung",
                    },
                }
            ],
        }
    ]


def test_default_is_the_middle_frame_and_the_files_window(server):
    r = client(server).chat.completions.create(
        model="fake", messages=dicom_message(dicom_url("MR_small.dcm")), max_tokens=1
    )
    [info] = r.model_extra["dicom"]
    assert info["frames"][0]["window"]["source"] == "file"
    r = client(server).chat.completions.create(
        model="fake", messages=dicom_message(dicom_url("examples_ybr_color.dcm")), max_tokens=1
    )
    [info] = r.model_extra["dicom"]
    assert info["frame_count"] == 30 and info["frames"] == [{"number": 16, "window": None}]


def test_named_frames_each_become_an_image(server):
    url = dicom_url("SC_rgb_rle_2frame.dcm")
    one = client(server).chat.completions.create(
        model="fake", messages=dicom_message(url, {"frames": [1]}), max_tokens=1
    )
    two = client(server).chat.completions.create(
        model="fake", messages=dicom_message(url, {"frames": [1, 2]}), max_tokens=1
    )
    assert [f["number"] for f in two.model_extra["dicom"][0]["frames"]] == [1, 2]
    # The fake engine counts one prompt token per image placeholder.
    assert two.usage.prompt_tokens == one.usage.prompt_tokens + 1


def test_stream_carries_the_dicom_field_on_its_first_chunk(server):
    chunks = list(
        client(server).chat.completions.create(
            model="fake",
            messages=dicom_message(
                dicom_url("CT_small.dcm"), {"window": {"center": 40, "width": 400}}
            ),
            max_tokens=2,
            stream=True,
        )
    )
    first = chunks[0].model_extra["dicom"][0]["frames"][0]["window"]
    assert first == {"center": 40.0, "width": 400.0, "function": "LINEAR", "source": "request"}
    assert all("dicom" not in (c.model_extra or {}) for c in chunks[1:])


def test_plain_images_have_no_dicom_field(server):
    from tests.conftest import image_message, png_data_url

    r = client(server).chat.completions.create(
        model="fake", messages=image_message(png_data_url()), max_tokens=1
    )
    assert "dicom" not in (r.model_extra or {})


@pytest.mark.parametrize(
    ("dicom", "status", "code", "param"),
    [
        (
            {"window": "lungs"},
            400,
            "invalid_request",
            "messages.0.content.0.image_url.dicom.window",
        ),
        ({"window": {"center": 40, "width": 0}}, 400, "invalid_request", None),
        ({"frames": [0]}, 400, "invalid_request", None),
        ({"frames": [1, 2, 3, 4, 5]}, 400, "too_many_images", "messages"),
        ({"frames": [31]}, 400, "invalid_frame", "messages[0].content[0].image_url.dicom.frames"),
    ],
)
def test_bad_dicom_options_are_400(server, dicom, status, code, param):
    body = {
        "model": "fake",
        "messages": dicom_message(dicom_url("examples_ybr_color.dcm"), dicom),
        "max_tokens": 1,
    }
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param


def test_non_image_dicom_is_422(server):
    body = {"model": "fake", "messages": dicom_message(dicom_url("waveform_ecg.dcm"))}
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "dicom_not_an_image"
    assert json.loads(r.text)["error"]["param"] == "messages[0].content[0]"
