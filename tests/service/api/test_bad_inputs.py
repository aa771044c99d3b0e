"""Every bad input gets its documented 4xx in OpenAI's error shape, and the server
(the real `gmai-vl serve` with the transformers engine) keeps serving."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from tests.conftest import image_message, png_data_url
from tests.service.media.test_images import png_header_only


def png_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def as_url(raw: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def chat(**overrides) -> dict:
    return {
        "model": "tiny",
        "messages": image_message(png_data_url()),
        "max_tokens": 2,
        **overrides,
    }


CASES = [
    # (name, request body or raw bytes, status, code or None, param or None)
    (
        "broken base64",
        chat(messages=image_message("data:image/png;base64,@@@notbase64")),
        400,
        "invalid_base64",
        "messages[0].content[0]",
    ),
    (
        "wrong mime",
        chat(messages=image_message(as_url(b"%PDF-1.7", "application/pdf"))),
        400,
        "unsupported_image_type",
        "messages[0].content[0]",
    ),
    (
        "truncated png",
        chat(messages=image_message(as_url(png_bytes()[:300]))),
        422,
        "unprocessable_image",
        "messages[0].content[0]",
    ),
    (
        "65k x 65k png header",
        chat(messages=image_message(as_url(png_header_only(65535, 65535)))),
        413,
        "image_too_large",
        "messages[0].content[0]",
    ),
    (
        "too many images",
        chat(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": png_data_url()}}] * 5,
                }
            ]
        ),
        400,
        "too_many_images",
        "messages",
    ),
    ("empty messages", chat(messages=[]), 400, "invalid_request", "messages"),
    ("unknown model", chat(model="gpt-4o"), 404, "model_not_found", "model"),
    ("negative max_tokens", chat(max_tokens=-5), 400, "invalid_request", "max_tokens"),
    (
        "max_tokens over the ceiling",
        chat(max_tokens=10**9),
        400,
        "max_tokens_too_large",
        "max_tokens",
    ),
    (
        "prompt + max_tokens over context",
        chat(max_tokens=4000),
        400,
        "context_length_exceeded",
        "max_tokens",
    ),
    ("n > 1", chat(n=3), 400, "unsupported_parameter", "n"),
    # OpenAI parameters no engine here honours: refused by name, never silently ignored
    *(
        (f"unsupported {field}", chat(**{field: value}), 400, "unsupported_parameter", field)
        for field, value in (
            ("tools", [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]),
            ("tool_choice", "required"),
            ("functions", [{"name": "lookup"}]),
            ("function_call", {"name": "lookup"}),
            ("audio", {"voice": "alloy", "format": "wav"}),
            ("modalities", ["text", "audio"]),
            ("logit_bias", {"50256": -100}),
            ("presence_penalty", 0.5),
            ("frequency_penalty", -1),
            ("prediction", {"type": "content", "content": "x"}),
            ("web_search_options", {}),
            ("reasoning_effort", "high"),
            ("verbosity", "low"),
        )
    ),
    ("top_logprobs without logprobs", chat(top_logprobs=2), 400, "invalid_request", "top_logprobs"),
    (
        "top_logprobs over 20",
        chat(logprobs=True, top_logprobs=21),
        400,
        "invalid_request",
        "top_logprobs",
    ),
    ("temperature out of range", chat(temperature=9), 400, "invalid_request", "temperature"),
    ("wrong type", chat(messages="hello"), 400, "invalid_request", "messages"),
    (
        "unknown role",
        chat(messages=[{"role": "wizard", "content": "x"}]),
        400,
        "invalid_request",
        "messages.0.role",
    ),
    (
        "unknown part type",
        chat(messages=[{"role": "user", "content": [{"type": "audio"}]}]),
        400,
        "invalid_request",
        None,
    ),
    (
        "remote url, host not allow-listed",
        chat(messages=image_message("http://10.0.0.1/secret.png")),
        400,
        "image_url_not_allowed",
        "messages[0].content[0]",
    ),
    ("malformed json", b'{"model": "tiny", "messages": [', 400, "invalid_request", None),
    ("not an object", b"[1, 2, 3]", 400, "invalid_request", None),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code", "param"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_4xx(served_tiny, name, body, status, code, param):
    url = served_tiny + "/v1/chat/completions"
    if isinstance(body, bytes):
        r = httpx.post(url, content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(url, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and isinstance(error["message"], str)
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert r.headers["x-request-id"]


def test_body_over_the_limit_is_413(served_tiny):
    r = httpx.post(
        served_tiny + "/v1/chat/completions",
        content=b"x" * (65 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_error_messages_do_not_echo_request_content(served_tiny):
    secret = "Patient John Doe MRN 123456"
    bodies = [
        chat(messages=[{"role": secret, "content": "x"}]),
        chat(model=secret),
        chat(messages=image_message("data:image/png;base64," + secret)),
    ]
    for body in bodies:
        r = httpx.post(served_tiny + "/v1/chat/completions", json=body)
        assert r.status_code >= 400 and "123456" not in r.text


def test_server_still_serves_after_every_bad_input(served_tiny):
    for _, body, *_ in CASES:
        if isinstance(body, dict):
            httpx.post(served_tiny + "/v1/chat/completions", json=body)
    r = httpx.post(served_tiny + "/v1/chat/completions", json=chat(max_tokens=3), timeout=60)
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(served_tiny + "/health/ready").status_code == 200
