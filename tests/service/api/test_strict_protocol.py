"""Protocol strictness, as OpenAI's API: request bodies in a content coding other than
identity are 415 naming what is accepted; request fields have strict types (a number
is a JSON number, a boolean a JSON boolean), a wrong one is 400 naming the field; a
user message without content is 400. Through a real gateway (embedded, fake engine),
on every route that takes a body."""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from service.config import Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from tests.conftest import ThreadedServer

MODEL = "fake"


def png_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    settings = Settings(engine="fake", served_model_name=MODEL)
    with ThreadedServer(build_embedded(settings, FakeEngine(token_interval=0)).app) as server:
        yield server.base_url


def chat(**fields: object) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 2,
        **fields,
    }


READ = {"model": MODEL, "study_instance_uid": "1.2.3"}
RENDER = {"image_url": {"url": png_url()}}
RESPONSE = {"model": MODEL, "input": "hello", "max_output_tokens": 2}
BODIES = {
    "/v1/chat/completions": chat(),
    "/v1/dicom/reads": READ,
    "/v1/images/render": RENDER,
    "/v1/responses": RESPONSE,
}


def post(base: str, path: str, body: bytes | dict, **headers: str) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        base + path,
        content=data,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


def assert_400_naming(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


# --- Content-Encoding ---------------------------------------------------------------


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "deflate", "gzip, gzip", "x-unknown"])
def test_a_coded_body_is_415_naming_the_accepted_coding(gateway, path, coding):
    raw = json.dumps(BODIES[path]).encode()
    body = gzip.compress(raw) if coding == "gzip" else raw  # a real gzip body too
    r = post(gateway, path, body, **{"content-encoding": coding})
    assert r.status_code == 415, r.text
    assert r.headers["accept-encoding"] == "identity"
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_every_content_encoding_header_counts(gateway):
    r = httpx.post(
        gateway + "/v1/chat/completions",
        content=json.dumps(chat()).encode(),
        headers=[
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
            ("content-encoding", "br"),
        ],
        timeout=30,
    )
    assert r.status_code == 415


@pytest.mark.parametrize("coding", ["identity", "IDENTITY", ""])
def test_identity_is_accepted(gateway, coding):
    r = post(gateway, "/v1/chat/completions", chat(), **{"content-encoding": coding})
    assert r.status_code == 200, r.text


# --- strict types -------------------------------------------------------------------

CHAT_CASES = [
    ({"temperature": "0.5"}, "temperature"),
    ({"top_p": "1"}, "top_p"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 2.0}, "max_tokens"),
    ({"max_completion_tokens": "2"}, "max_completion_tokens"),
    ({"seed": "7"}, "seed"),
    ({"n": True}, "n"),
    ({"stream": "true"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"logprobs": 1}, "logprobs"),
    ({"top_logprobs": "2", "logprobs": True}, "top_logprobs"),
    ({"model": 7}, "model"),
    ({"stop": 5}, "stop"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": 1}}},
        "response_format.json_schema.name",
    ),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    (
        {"messages": [{"role": "system", "content": None}, {"role": "user", "content": "q"}]},
        "messages.0.content",
    ),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages.0.content.0.text",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": png_url(), "dicom": {"frames": ["1"]}},
                        }
                    ],
                }
            ]
        },
        "messages.0.content.0.image_url.dicom.frames.0",
    ),
]


@pytest.mark.parametrize(("fields", "param"), CHAT_CASES, ids=[p for _, p in CHAT_CASES])
def test_chat_fields_have_strict_types(gateway, fields, param):
    assert_400_naming(post(gateway, "/v1/chat/completions", chat(**fields)), param)


def test_the_right_types_still_pass(gateway):
    ok = chat(
        temperature=1,  # an integer is a JSON number
        top_p=0.5,
        seed=7,
        stop=["\n"],
        priority="stat",
        stream_options=None,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None},  # only an assistant may have none
            {"role": "user", "content": "again"},
        ],
    )
    r = post(gateway, "/v1/chat/completions", ok)
    assert r.status_code == 200, r.text
    r = post(
        gateway, "/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True})
    )
    assert r.status_code == 200 and '"usage":{' in r.text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": True}, "max_tokens"),
        ({"store": "yes"}, "store"),
        ({"prompt": 5}, "prompt"),
        ({"dicom": {"frames": [1.0]}}, "dicom.frames.0"),
        ({"priority": 1}, "priority"),
    ],
)
def test_read_fields_have_strict_types(gateway, fields, param):
    assert_400_naming(post(gateway, "/v1/dicom/reads", {**READ, **fields}), param)


def test_a_read_with_a_lane_by_name_passes_validation(gateway):
    r = post(gateway, "/v1/dicom/reads", {**READ, "priority": "stat", "max_tokens": 4})
    # past validation: refused only for want of a PACS here
    assert r.json()["error"]["code"] == "pacs_required", r.text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_side": "64"}, "max_side"),
        ({"max_side": 64.0}, "max_side"),
        (
            {"image_url": {"url": png_url(), "dicom": {"window": {"center": "40", "width": 400}}}},
            "image_url.dicom.window.center",
        ),
    ],
)
def test_render_fields_have_strict_types(gateway, fields, param):
    assert_400_naming(post(gateway, "/v1/images/render", {**RENDER, **fields}), param)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "0.5"}, "temperature"),
        ({"max_output_tokens": True}, "max_output_tokens"),
        ({"stream": "true"}, "stream"),
        ({"priority": 1}, "priority"),
    ],
)
def test_responses_fields_have_strict_types(gateway, fields, param):
    assert_400_naming(post(gateway, "/v1/responses", {**RESPONSE, **fields}), param)


def test_a_response_with_the_right_types_passes(gateway):
    r = post(gateway, "/v1/responses", {**RESPONSE, "temperature": 1, "priority": "stat"})
    assert r.status_code == 200, r.text
