"""Hostile inputs against a real gateway (embedded, fake engine, keys on): every case
ends in its documented 4xx, within its deadline, and the server keeps serving.

Hostile image URLs reuse the loopback servers of tests/service/media/test_fetch.py
(slow, dripping, endless, redirecting); SafeFetcher's own rules are tested there,
this suite proves they hold through the whole API."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from service.config import FetchSettings, ImageLimits, Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.security.keys import KeyFile
from tests.conftest import ThreadedServer, png_data_url
from tests.service.media.test_fetch import Handler, serve

MODEL = "fake"
DEADLINE = 5.0  # seconds any refusal may take: fetch limits below are 0.5 s / 1.5 s
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = serve()
    previous, Handler.other = Handler.other, "http://169.254.169.254"  # redirect target
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        Handler.other = previous
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, origin) -> Iterator[tuple[str, dict[str, str]]]:
    path = tmp_path_factory.mktemp("hostile") / "keys.json"
    keys = KeyFile()
    key = keys.create("fuzz")
    keys.save(path)
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        api_keys_file=path,
        max_body_bytes=8 * 1024 * 1024,
        body_timeout=BODY_TIMEOUT,
        max_messages=64,
        max_text_chars=10_000,
        images=ImageLimits(max_images_per_request=4, max_bytes=200_000),
        fetch=FetchSettings(
            allowed_hosts=["127.0.0.1"], read_timeout=0.5, total_timeout=1.5, connect_timeout=0.5
        ),
    )
    service = build_embedded(settings, FakeEngine(token_interval=0))
    with ThreadedServer(service.app) as server:
        yield server.base_url, {"Authorization": f"Bearer {key}"}


def chat(**overrides) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            **overrides}  # fmt: skip


def image_chat(url: str) -> dict:
    return chat(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    )


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def raw(body: dict, **replace: str) -> bytes:
    """A JSON body with placeholders swapped for text json.dumps would not produce."""
    text = json.dumps(body)
    for placeholder, value in replace.items():
        text = text.replace(json.dumps(placeholder), value)
    return text.encode()


def cases(origin: str) -> list[tuple[str, bytes | dict, int, str | None]]:
    tiny = png_data_url(8, 8)
    big_png = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"\0" * 300_000).decode()
    return [
        # malformed JSON
        ("empty body", b"", 400, "invalid_request"),
        ("truncated", b'{"model": "fake", "messages": [', 400, "invalid_request"),
        ("not utf-8", b'\xff\xfe{"model": 1}', 400, "invalid_request"),
        ("NaN", raw(chat(temperature="@"), **{"@": "NaN"}), 400, "invalid_request"),
        ("trailing garbage", json.dumps(chat()).encode() + b"}}}", 400, "invalid_request"),
        ("null", b"null", 400, "invalid_request"),
        # wrong types
        ("messages a number", chat(messages=5), 400, "invalid_request"),
        (
            "content a number",
            chat(messages=[{"role": "user", "content": 7}]),
            400,
            "invalid_request",
        ),
        ("max_tokens a string", chat(max_tokens="ten"), 400, "invalid_request"),
        ("model null", chat(model=None), 400, "invalid_request"),
        (
            "image_url a list",
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": [1]}]}]),
            400,
            "invalid_request",
        ),
        # huge numbers
        ("max_tokens 10^30", chat(max_tokens=10**30), 400, None),
        ("max_tokens 1e400", raw(chat(max_tokens="@"), **{"@": "1e400"}), 400, None),
        ("seed 10^40", chat(seed=10**40), 400, "invalid_request"),
        ("temperature 1e308", chat(temperature=1e308), 400, "invalid_request"),
        # unicode edge cases
        (
            "lone surrogate",
            raw(chat(messages=[{"role": "user", "content": "@"}]), **{"@": '"\\ud800"'}),
            400,
            None,
        ),
        (
            "unicode model name",
            chat(model="\uff46\uff41\uff4b\uff45\u200b"),
            404,
            "model_not_found",
        ),
        (
            "unicode role",
            chat(messages=[{"role": "usér", "content": "x"}]),
            400,
            "invalid_request",
        ),
        ("RTL override in priority", chat(priority="\u202estat"), 400, "invalid_request"),
        # deep nesting
        (
            "100k nested arrays",
            raw(chat(extra="@"), **{"@": nested(100_000)}),
            400,
            "json_too_deep",
        ),
        (
            "nested schema",
            raw(
                chat(
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "x", "schema": "@"},
                    }
                ),
                **{"@": '{"a":' * 40 + "1" + "}" * 40},
            ),
            400,
            "json_too_deep",
        ),
        # sizes and counts
        (
            "10k images",
            chat(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": tiny}}] * 10_000,
                    }
                ]
            ),
            400,
            "too_many_images",
        ),
        (
            "10k messages",
            chat(messages=[{"role": "user", "content": "x"}] * 10_000),
            400,
            "too_many_messages",
        ),
        (
            "text too long",
            chat(messages=[{"role": "user", "content": "x" * 10_001}]),
            400,
            "text_too_long",
        ),
        ("image bytes over the cap", image_chat(big_png), 413, "image_too_large"),
        ("body over the cap", b"[" + b" " * (9 * 1024 * 1024) + b"]", 413, "request_too_large"),
        # hostile image URLs
        (
            "cloud metadata",
            image_chat("http://169.254.169.254/latest/meta-data/"),
            400,
            "image_url_not_allowed",
        ),
        ("metadata as decimal", image_chat("http://2852039166/"), 400, None),
        (
            "metadata as v4-mapped v6",
            image_chat("http://[::ffff:169.254.169.254]/"),
            400,
            None,
        ),
        ("localhost", image_chat("http://localhost:8000/x.png"), 400, "image_url_not_allowed"),
        ("loopback hex", image_chat("http://0x7f000001/x.png"), 400, None),
        ("private 10/8", image_chat("http://10.0.0.1/x.png"), 400, "image_url_not_allowed"),
        (
            "private 192.168/16",
            image_chat("http://192.168.1.1/x.png"),
            400,
            "image_url_not_allowed",
        ),
        ("file scheme", image_chat("file:///etc/passwd"), 400, "invalid_image_url"),
        (
            "credentials in url",
            image_chat(origin.replace("//", "//u:p@") + "/ok.png"),
            400,
            "invalid_image_url",
        ),
        (
            "redirect to metadata",
            image_chat(origin + "/other-host-redirect"),
            400,
            "image_url_redirect_refused",
        ),
        ("redirect loop", image_chat(origin + "/loop"), 400, None),
        ("slow server", image_chat(origin + "/slow"), 400, "image_fetch_timeout"),
        ("dripping server", image_chat(origin + "/drip"), 400, "image_fetch_timeout"),
        ("endless body", image_chat(origin + "/endless"), 413, "image_too_large"),
        ("4 GiB declared", image_chat(origin + "/huge-length"), 413, "image_too_large"),
    ]


def test_every_hostile_input_is_a_timely_4xx_and_the_server_survives(gateway, origin):
    url, auth = gateway
    failures = []
    with httpx.Client(timeout=30) as client:
        for name, body, status, code in cases(origin):
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            started = time.perf_counter()
            r = client.post(url + "/v1/chat/completions", content=content,
                            headers={**auth, "content-type": "application/json"})  # fmt: skip
            elapsed = time.perf_counter() - started
            error = r.json().get("error", {}) if r.headers.get("content-type", "").startswith(
                "application/json") else {}  # fmt: skip
            if (
                r.status_code != status
                or (code is not None and error.get("code") != code)
                or elapsed > DEADLINE
                or set(error) != {"message", "type", "param", "code"}
            ):
                failures.append((name, r.status_code, error.get("code"), round(elapsed, 2)))
            assert client.get(url + "/health/ready").status_code == 200, name
    assert failures == []
    ok = httpx.post(url + "/v1/chat/completions", json=chat(), headers=auth, timeout=30)
    assert ok.status_code == 200


def test_a_body_that_never_finishes_is_408_at_the_body_deadline(gateway):
    url, auth = gateway
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(chat()).encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {auth['Authorization']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n"  # promises more than it sends
        )
        started = time.perf_counter()
        s.sendall(head.encode() + body)
        reply = s.recv(65536).decode()
        elapsed = time.perf_counter() - started
    assert reply.startswith("HTTP/1.1 408"), reply[:200]
    assert '"request_timeout"' in reply
    assert BODY_TIMEOUT * 0.9 <= elapsed < BODY_TIMEOUT + 2
    assert httpx.get(url + "/health/ready").status_code == 200
