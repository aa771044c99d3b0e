"""Hostile values through a real gateway (embedded, fake engine): non-finite numbers
in the body or in DICOM headers, undecodable syntaxes, and errors that would quote
input. Every case is a documented 4xx, every body strict JSON, and nothing a client
sent (or an exception's message) reaches an error message or a log line."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.responses import StreamingResponse
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from service.config import Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from tests.conftest import ThreadedServer

MODEL = "fake"
MARKER = "zq7secretmarker"  # stands for PHI: must never come back or reach a log


def _boom() -> None:
    raise ValueError(f"patient {MARKER} in a header")


async def _stream_then_boom():
    yield "data: {}\n\n"
    _boom()


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    settings = Settings(engine="fake", served_model_name=MODEL)
    app = build_embedded(settings, FakeEngine(token_interval=0)).app

    # Routes that fail the way a bug would: an exception whose message holds PHI.
    async def boom() -> None:
        _boom()

    async def boom_stream() -> StreamingResponse:
        return StreamingResponse(_stream_then_boom(), media_type="text/event-stream")

    app.add_api_route("/v1/test-boom", boom)
    app.add_api_route("/v1/test-boom-stream", boom_stream)
    with ThreadedServer(app) as server:
        yield server.base_url


def strict_json(text: str) -> object:
    """json.loads that refuses NaN and Infinity (Python's accepts them)."""

    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def dicom_url(**attributes: object) -> str:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return "data:application/dicom;base64," + base64.b64encode(buf.getvalue()).decode()


def image_body(url: str, dicom: object = None, **extra: object) -> dict:
    image_url: dict[str, object] = {"url": url}
    if dicom is not None:
        image_url["dicom"] = dicom
    part = {"type": "image_url", "image_url": image_url}
    return {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": [part]}],
            **extra}  # fmt: skip


def post(url: str, content: bytes | dict) -> httpx.Response:
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    return httpx.post(url + "/v1/chat/completions", content=data,
                      headers={"content-type": "application/json"}, timeout=30)  # fmt: skip


@pytest.mark.parametrize(
    ("center", "width", "field"),
    [
        ("NaN", "400", "center"),
        ("40", "Infinity", "width"),
        ("1e999", "400", "center"),
        ("40", "-Infinity", "width"),
        ("1e300", "400", "center"),
        ("40", "1e300", "width"),
    ],
)
def test_a_non_finite_or_absurd_request_window_is_400_naming_the_field(
    gateway, center, width, field
):
    template = json.dumps(image_body(dicom_url(), {"window": {"center": 1, "width": 2}}))
    text = template.replace('"center": 1', f'"center": {center}').replace(
        '"width": 2', f'"width": {width}'
    )
    r = post(gateway, text.encode())
    assert r.status_code == 400, r.text
    error = strict_json(r.text)["error"]
    assert error["param"] == f"messages.0.content.0.image_url.dicom.window.{field}"


def test_nan_inside_a_json_schema_is_400(gateway):
    schema = {"name": "x", "schema": {"maximum": 1}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": schema}}  # fmt: skip
    r = post(gateway, json.dumps(body).replace('"maximum": 1', '"maximum": NaN').encode())
    assert r.status_code == 400, r.text
    error = r.json()["error"]  # refused as a bad request, before any engine sees it
    assert error["code"] == "invalid_request"
    assert error["param"] == "response_format.json_schema.schema"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_in_an_unknown_top_level_field_is_400(gateway, literal):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "future": [1]}
    r = post(gateway, json.dumps(body).replace("[1]", f"[{literal}]").encode())
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    ("stop", "param", "says"),
    [
        (["a", "b", "c", "d", "e"], "stop", "at most 4 items"),
        (["a", 5], "stop.1", "valid string"),
        (5, "stop", "valid"),
    ],
)
def test_a_union_field_names_what_is_wrong_with_the_branch_the_value_took(
    gateway, stop, param, says
):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stop": stop}
    r = post(gateway, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"], error


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_stream_over_a_dicom_with_a_nan_window_is_strict_json(gateway):
    body = image_body(dicom_url(WindowCenter="NaN", WindowWidth="400"), stream=True)
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    first = strict_json(lines[0])
    assert first["dicom"][0]["frames"][0]["window"]["source"] == "percentile"
    for line in lines[:-1]:
        strict_json(line)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("attributes", "code"),
    [
        ({"RescaleSlope": "1e38"}, "invalid_dicom_values"),
        ({"RescaleIntercept": "NaN"}, "invalid_dicom_values"),
        ({"RescaleSlope": "-inf"}, "invalid_dicom_values"),
    ],
)
def test_a_dicom_whose_values_overflow_is_422(gateway, attributes, code):
    r = post(gateway, image_body(dicom_url(**attributes)))
    assert r.status_code == 422, r.text
    assert strict_json(r.text)["error"]["code"] == code


def test_an_mpeg2_dicom_answers_the_documented_code(gateway):
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 MP@ML
    ds.PixelData = encapsulate([ds.PixelData])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    url = "data:application/dicom;base64," + base64.b64encode(buf.getvalue()).decode()
    r = post(gateway, image_body(url))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unsupported_transfer_syntax"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (f"data:image/{MARKER};base64,AAAA", "unsupported_image_type"),
        (f"{MARKER}://x/y.png", "invalid_image_url"),
        (f"http://{MARKER}.example/x.png", "image_url_not_allowed"),
        (f"https://{MARKER}.example:8443/x.png?study={MARKER}", "image_url_not_allowed"),
    ],
)
def test_errors_quote_nothing_of_the_request(gateway, url, code):
    r = post(gateway, image_body(url))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code
    assert MARKER not in r.text
    assert r.json()["error"]["param"] == "messages[0].content[0]"


def test_an_unexpected_error_is_a_500_logged_once_without_its_message(gateway, caplog):
    with caplog.at_level(logging.INFO):
        r = httpx.get(gateway + "/v1/test-boom", timeout=10)
        with (
            pytest.raises(httpx.RemoteProtocolError),  # cut off: the headers were sent
            httpx.stream("GET", gateway + "/v1/test-boom-stream", timeout=10) as streamed,
        ):
            streamed.read()
    assert r.status_code == 500
    assert r.json()["error"] == {"message": "Internal server error.", "type": "server_error",
                                 "param": None, "code": None}  # fmt: skip
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert MARKER not in logged and MARKER not in caplog.text
    assert "Exception in ASGI application" not in caplog.text
    assert logged.count("(message withheld)") == 2  # once per failure, with its frames
    assert httpx.get(gateway + "/health/ready").status_code == 200


def test_the_server_log_filter_keeps_frames_and_drops_messages(gateway, caplog):
    from service import errors

    for name in ("uvicorn.error", "uvicorn.asgi", "asyncio"):  # installed by the app
        assert any(isinstance(f, errors.RedactExceptions) for f in logging.getLogger(name).filters)

    logger = logging.getLogger("test.redacted")
    logger.addFilter(errors.RedactExceptions())
    try:
        _boom()
    except ValueError:
        with caplog.at_level(logging.ERROR, logger="test.redacted"):
            logger.exception("Exception in %s", "ASGI application")
    assert MARKER not in caplog.text
    assert "_boom" in caplog.text and "builtins.ValueError (message withheld)" in caplog.text


@pytest.mark.parametrize(
    "value", [b"1_0", b"nan", b"inf", b"1e3", b"0x10", b"-1", b"5 5", "\u0665".encode()]
)  # float() takes the first and the last (an Arabic-Indic five)
def test_x_request_timeout_is_a_plain_decimal(gateway, value):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    r = httpx.post(gateway + "/v1/chat/completions", json=body,
                   headers={"X-Request-Timeout": value}, timeout=10)  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Request-Timeout"


def test_a_client_leaving_mid_body_is_no_error(gateway, caplog):
    """A chunked body that announces 256 TB and stops: the client leaves, the server
    logs no error (nothing broke: a 499 nobody reads) and keeps serving."""
    host, port = gateway.removeprefix("http://").split(":")
    before = _answered_4xx(gateway)
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nffffffffffff\r\n{\"model\"")  # fmt: skip
            time.sleep(0.2)  # the server is reading the body when the client leaves
        deadline = time.monotonic() + 10
        while _answered_4xx(gateway) == before:  # the request is over once it is counted
            assert time.monotonic() < deadline, "the abandoned request never ended"
            time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert httpx.get(gateway + "/health/ready").status_code == 200


def _answered_4xx(gateway: str) -> float:
    text = httpx.get(gateway + "/metrics", timeout=5).text
    # model "": the body never arrived, so no model was asked for
    prefix = 'gmaivl_requests_total{model="",route="/v1/chat/completions",status_class="4xx"}'
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0
