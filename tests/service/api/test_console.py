"""The console's HTTP side without a browser (tests/e2e/test_console_browser.py has
one): the static files and their headers, `POST /v1/images/render` ("what the
model saw", pixel for pixel), `GET /v1/ops/stats`, and what is public or keyed."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from service.api.console import CONSOLE_PATHS, CSP
from service.config import ImageLimits, Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.media.dicom import DicomOptions
from service.media.resolve import decode_payload
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer, png_data_url

MODEL = "console-test"
STATIC = Path(__file__).resolve().parents[3] / "service" / "console" / "static"


def dicom_url(name: str) -> str:
    data = Path(get_testdata_file(name)).read_bytes()
    return "data:application/dicom;base64," + base64.b64encode(data).decode()


def png_pixels(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    raw = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    """Keys on, an audit log, a slow one-at-a-time fake engine (so jobs queue)."""
    tmp = tmp_path_factory.mktemp("console")
    keys_path, audit = tmp / "keys.json", tmp / "audit.jsonl"
    tenants = {"radiology": TenantPolicy(), "one-image": TenantPolicy(max_images_per_request=1)}
    keys = KeyFile(tenants=tenants)
    key = keys.create("radiology")
    keys.save(keys_path)
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        api_keys_file=keys_path,
        api_keys_reload_interval=0,
        audit_log=str(audit),
    )
    engine = FakeEngine(token_interval=0.05, max_concurrency=1)
    with ThreadedServer(build_embedded(settings, engine).app) as server:
        yield server.base_url, key, audit


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def render(gateway, body: dict, key: str | None = None) -> httpx.Response:
    base_url, default_key, _ = gateway
    return httpx.post(
        base_url + "/v1/images/render", json=body, headers=auth(key or default_key), timeout=30
    )


# --- static files -----------------------------------------------------------------------


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if self.tags and self.tags[-1][0] == "script" and data.strip():
            self.inline_script = True


def test_the_page_and_its_files_are_public_with_a_strict_csp(gateway):
    base_url, _, audit = gateway
    for path, kind in (
        ("/ui/", "text/html"),
        ("/ui/console.js", "text/javascript"),
        ("/ui/signin.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
    ):
        r = httpx.get(base_url + path)  # no key: the page serves no data
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.content == (STATIC / (path.removeprefix("/ui/") or "index.html")).read_bytes()
    assert "script-src 'self'" in CSP and "connect-src 'self'" in CSP and "unsafe" not in CSP
    redirect = httpx.get(base_url + "/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"
    # Anything else under /ui/ is not public, and the page's routes stay out of the schema.
    assert httpx.get(base_url + "/ui/../v1/models").status_code in (401, 404)
    assert httpx.get(base_url + "/ui/secrets.json").status_code == 401
    schema = httpx.get(base_url + "/openapi.json").json()["paths"]
    assert not any(p.startswith("/ui") for p in schema)
    assert {"/v1/images/render", "/v1/ops/stats", "/v1/dicom/studies"} <= set(schema)
    # Public paths are not audited (they would drown the trail).
    events = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
    assert not any(e["route"] == "/ui/" for e in events)
    assert {
        "/ui",
        "/ui/",
        "/ui/index.html",
        "/ui/console.js",
        "/ui/signin.js",
        "/ui/console.css",
        "/ui/config.json",
    } == CONSOLE_PATHS
    # Without an IdP the page offers API keys only.
    assert httpx.get(base_url + "/ui/config.json").json() == {"sign_in": None}


def test_the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere():
    html = (STATIC / "index.html").read_text()
    parser = Tags()
    parser.feed(html)
    assert not parser.inline_script
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") or name == "style" for name in attrs), tag
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not re.match(r"^(https?:)?//", value), (tag, value)
    assert ("script", {"src": "console.js", "defer": None}) in parser.tags
    script = (STATIC / "console.js").read_text()
    # fetch() only ever gets a path of this origin.
    assert not re.search(r"https?://", script)
    labels = re.findall(r'<label for="[^"]+">([^<]+)</label>', html)
    assert {"API key", "Image", "Window", "Question"} <= set(labels)
    assert 'role="log"' in html and 'alt="Model input"' in html


def test_the_api_needs_the_key_the_page_asks_for(gateway):
    base_url, key, _ = gateway
    for method, path in (
        ("POST", "/v1/images/render"),
        ("GET", "/v1/ops/stats"),
        ("GET", "/v1/dicom/pacs"),
        ("GET", "/v1/dicom/studies"),
    ):
        r = httpx.request(method, base_url + path)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(base_url + "/v1/ops/stats", headers=auth(key)).status_code == 200


# --- render: what the model saw ------------------------------------------------------------


def test_render_returns_exactly_the_pixels_the_engine_receives(gateway):
    limits = ImageLimits()
    url = png_data_url(1500, 300, (10, 200, 90))  # wider than max_side: resized like a chat
    r = render(gateway, {"image_url": {"url": url}})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "image.rendering" and body["dicom"] is None and not body["resized"]
    [image] = body["images"]
    expected = decode_payload(
        "image/png", base64.b64decode(url.split(",")[1]), DicomOptions(), limits, "p"
    )
    engine = expected.images[0]
    assert (image["width"], image["height"]) == (engine.width, engine.height) == (1024, 205)
    assert png_pixels(image["png"]).tobytes() == engine.rgb


def test_render_of_dicom_reports_frame_and_window_like_a_chat_answer(gateway):
    url = dicom_url("CT_small.dcm")
    data = base64.b64decode(url.split(",")[1])
    for window, options in (
        ("lung", DicomOptions(window="lung")),
        (None, DicomOptions()),
    ):
        part = {"url": url, **({"dicom": {"window": window}} if window else {})}
        body = render(gateway, {"image_url": part}).json()
        expected = decode_payload("application/dicom", data, options, ImageLimits(), "image_url")
        assert body["dicom"] == expected.info
        assert png_pixels(body["images"][0]["png"]).tobytes() == expected.images[0].rgb
    lung = render(gateway, {"image_url": {"url": url, "dicom": {"window": "lung"}}}).json()
    assert lung["dicom"]["frames"][0]["window"]["preset"] == "lung"
    custom = {"url": url, "dicom": {"window": {"center": 40, "width": 80}}}
    window = render(gateway, {"image_url": custom}).json()["dicom"]["frames"][0]["window"]
    assert window == {"center": 40.0, "width": 80.0, "function": "LINEAR", "source": "request"}


def test_render_of_frames_and_thumbnails(gateway):
    url = dicom_url("examples_ybr_color.dcm")
    body = render(gateway, {"image_url": {"url": url, "dicom": {"frames": [1, 30]}}}).json()
    assert body["dicom"]["frame_count"] == 30
    assert [f["number"] for f in body["dicom"]["frames"]] == [1, 30]
    assert len(body["images"]) == 2
    thumb = render(gateway, {"image_url": {"url": url}, "max_side": 64}).json()
    assert thumb["resized"] and max(thumb["images"][0]["width"], thumb["images"][0]["height"]) == 64


def test_render_refuses_bad_input_with_openai_errors(gateway):
    base_url, key, _ = gateway
    cases = [
        ({"image_url": {"url": "data:image/png;base64,aGVsbG8="}}, 422, "unprocessable_image"),
        ({"image_url": {"url": "data:text/plain;base64,aGVsbG8="}}, 400, "unsupported_image_type"),
        ({"image_url": {"url": "http://10.0.0.1/x.png"}}, 400, "image_url_not_allowed"),
        ({"image_url": {"url": png_data_url(), "dicom": {"window": "nope"}}}, 400, None),
        ({"image_url": {"url": png_data_url()}, "max_side": 4}, 400, None),
        ({}, 400, None),
    ]
    for body, status, code in cases:
        r = render(gateway, body)
        assert r.status_code == status, body
        assert r.json()["error"]["type"] == "invalid_request_error"
        if code:
            assert r.json()["error"]["code"] == code
    r = httpx.post(base_url + "/v1/images/render", content=b"{", headers=auth(key))
    assert r.status_code == 400
    frames = {"url": dicom_url("examples_ybr_color.dcm"), "dicom": {"frames": [1, 2]}}
    r = render(gateway, {"image_url": frames}, key=_tenant_key(gateway, "one-image"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_images"


def _tenant_key(gateway, tenant: str) -> str:
    """A fresh key of `tenant` in the gateway's key file (reloaded on change)."""
    base_url, _, audit = gateway
    keys_path = audit.parent / "keys.json"
    keys = KeyFile.load(keys_path)
    key = keys.create(tenant)
    keys.save(keys_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(base_url + "/v1/models", headers=auth(key)).status_code == 200:
            return key
        time.sleep(0.05)
    raise AssertionError("the new key was not picked up")


def test_a_dicom_render_is_audited_with_the_hashed_sop_uid_only(gateway):
    _, _, audit = gateway
    render(gateway, {"image_url": {"url": dicom_url("MR_small.dcm")}})
    text = audit.read_text()
    events = [json.loads(line) for line in text.splitlines()]
    event = [e for e in events if e["route"] == "/v1/images/render" and e["status"] == 200][-1]
    assert event["images"] == 1 and len(event["sop_instance_uid_sha256"]) == 1
    from pydicom import dcmread

    uid = str(dcmread(get_testdata_file("MR_small.dcm")).SOPInstanceUID)
    assert uid not in text


# --- operations ---------------------------------------------------------------------


def test_ops_stats_shows_the_queue_filling_and_the_latency_of_what_ran(gateway):
    base_url, key, _ = gateway

    def chat() -> None:
        httpx.post(
            base_url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6},
            headers=auth(key),
            timeout=30,
        )

    def stats() -> dict:
        return httpx.get(base_url + "/v1/ops/stats", headers=auth(key)).json()

    before = stats()
    assert [lane["lane"] for lane in before["lanes"]] == ["stat", "urgent", "routine", "batch"]
    assert before["live_workers"] == 1 and before["model"] == MODEL
    threads = [threading.Thread(target=chat) for _ in range(4)]
    for t in threads:
        t.start()
    # One runs at a time (0.3 s each): the others wait in the routine lane.
    deadline, seen = time.monotonic() + 5, None
    while time.monotonic() < deadline:
        routine = stats()["lanes"][2]
        if routine["depth"] >= 2 and routine["oldest_age_seconds"] > 0:
            seen = routine
            break
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert seen is not None, "the queue never showed the waiting jobs"
    after = stats()
    assert after["lanes"][2]["depth"] == 0
    latency = after["latency_seconds"]
    assert latency["count"] - before["latency_seconds"]["count"] == 4
    # Four requests queued behind each other: 0.3 s to 1.2 s from arrival to last byte.
    assert 0.25 <= latency["p50"] <= 1.5 and latency["p50"] <= latency["p90"] <= latency["p99"]
    assert after["time_to_first_token_seconds"]["count"] >= 4
