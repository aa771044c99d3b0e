"""The console at /ui/ in a real browser: Debian's chromium driven by Playwright, against
the real gateway (embedded, fake engine at a visible pace) and the test Orthanc.

The fake engine paces tokens so a test can see the answer while it streams; the
image paths (upload, DICOM windowing, WADO-RS from Orthanc) are the real ones.
`GMAIVL_CONSOLE_SCREENSHOTS=docs` writes the screenshots docs/console.md shows.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.config import PacsEntry, Settings
from service.embedded import build_embedded
from service.engines.fake import TOKENS, FakeEngine
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer, serve_tiny
from tests.orthanc import OrthancServer
from training.data.demo_images import synth_image

CHROMIUM = "/usr/bin/chromium"
FULL_ANSWER = "".join(TOKENS)
SHOTS = os.environ.get("GMAIVL_CONSOLE_SCREENSHOTS")


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def console(orthanc: OrthancServer) -> Iterator[str]:
    """The gateway with the test Orthanc as its PACS; keys off (local use)."""
    settings = Settings(
        engine="fake",
        served_model_name="gmai-vl-demo",
        pacs=[PacsEntry(**orthanc.pacs_entry())],
    )
    service = build_embedded(settings, FakeEngine(token_interval=0.25))
    with ThreadedServer(service.app) as server:
        yield server.base_url


class Seen:
    """What a page did: every request URL, every console error (a CSP violation is one)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def page(browser: Browser, console: str, seen: Seen) -> Iterator[Page]:
    """A fresh page on the console at 1280x800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.goto(console + "/ui/")
    expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
    page.get_by_label("Max tokens").fill(str(len(TOKENS)))  # the fake engine's one sentence
    try:
        yield page
    finally:
        context.close()


def demo_png(tmp_path: Path) -> Path:
    pixels, _ = synth_image("xray", "upper left", 256, np.random.default_rng(3))
    path = tmp_path / "chest-xray.png"
    Image.fromarray(pixels).save(path)
    return path


def preview_pixels(page: Page) -> np.ndarray:
    src = page.get_by_alt_text("Model input").get_attribute("src")
    assert src is not None and src.startswith("data:image/png;base64,")
    import base64

    data = base64.b64decode(src.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_ask_about_a_png_streams_the_answer_into_the_log(
    page: Page, console: str, seen: Seen, tmp_path
):
    path = demo_png(tmp_path)
    page.get_by_label("Image").set_input_files(str(path))
    preview = page.get_by_alt_text("Model input")
    expect(preview).to_be_visible()
    expect(page.locator("#preview-info")).to_contain_text("256 \u00d7 256 px")
    # The preview is the model's input: the uploaded pixels (PNG in, lossless out).
    assert np.array_equal(preview_pixels(page), np.asarray(Image.open(path).convert("RGB")))
    page.get_by_label("Question").fill("Is there an opacity in this chest X-ray?")
    page.get_by_label("Priority").select_option("urgent")
    page.get_by_role("button", name="Ask", exact=True).click()
    log = page.get_by_role("log")
    # While streaming: some of the answer is there, not all of it (7 tokens, 0.25 s apart).
    page.wait_for_function(
        """() => {
            const log = document.querySelector('[role=log]');
            return log.dataset.state === 'streaming' && log.textContent.length > 0;
        }"""
    )
    partial = log.text_content() or ""
    assert partial and FULL_ANSWER.startswith(partial) and partial != FULL_ANSWER
    expect(log).to_have_text(FULL_ANSWER)
    expect(page.locator("#tokens")).to_contain_text("7 generated")
    expect(page.locator("#ttft")).to_have_text(re.compile(r"^\d+\.\d{3} s$"))
    expect(page.locator("#latency")).to_have_text(re.compile(r"^\d+\.\d{3} s$"))
    # The operations panel reads the gateway: a live worker, the request's latency.
    expect(page.locator("#live-workers")).to_have_text("1")
    expect(page.locator("#ops-latency")).to_have_text(re.compile(r"^\d+\.\d{3} / "))
    shot(page, "image")
    # Everything the page loaded came from the gateway; the CSP blocked nothing.
    assert seen.requests and all(u.startswith((console, "data:")) for u in seen.requests)
    assert seen.errors == []


def test_dicom_window_changes_the_preview_and_reports_the_window(page: Page):
    page.get_by_label("Image").set_input_files(get_testdata_file("CT_small.dcm"))
    info = page.locator("#preview-info")
    expect(info).to_contain_text("frame 1 of 1")
    expect(info).to_contain_text("from percentile")  # CT_small names no window of its own
    before = preview_pixels(page)
    page.get_by_label("Window").select_option("lung")
    expect(info).to_contain_text("window centre -600 / width 1500 (LINEAR, preset lung)")
    expect(page.get_by_alt_text("Model input")).to_have_attribute("data-window", "-600/1500")
    lung = preview_pixels(page)
    assert not np.array_equal(before, lung)
    page.get_by_label("Window").select_option("custom")
    page.get_by_label("Centre").fill("40")
    page.get_by_label("Width").fill("80")
    page.get_by_label("Width").press("Tab")
    expect(info).to_contain_text("window centre 40 / width 80 (LINEAR, from request)")
    assert not np.array_equal(lung, preview_pixels(page))
    page.get_by_label("Window").select_option("abdomen")
    expect(info).to_contain_text("window centre 40 / width 400 (LINEAR, preset abdomen)")
    page.get_by_label("Question").fill("What does this CT slice show?")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)
    shot(page, "dicom")


def test_a_multiframe_dicom_picks_its_frame(page: Page):
    page.get_by_label("Image").set_input_files(get_testdata_file("examples_ybr_color.dcm"))
    info = page.locator("#preview-info")
    expect(info).to_contain_text("frame 16 of 30")  # the middle frame by default
    page.get_by_label("Frame").fill("3")
    page.get_by_label("Frame").press("Tab")
    expect(info).to_contain_text("frame 3 of 30")


def test_a_broken_file_shows_a_readable_error(page: Page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a png")
    page.get_by_label("Image").set_input_files(str(broken))
    alert = page.locator("#preview-error")
    expect(alert).to_have_text(
        "The image cannot be used: Image could not be read as image/png. (HTTP 422)"
    )
    expect(page.get_by_alt_text("Model input")).to_be_hidden()
    truncated = tmp_path / "truncated.dcm"
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    page.get_by_label("Image").set_input_files(str(truncated))
    expect(alert).to_have_text(re.compile(r"^The image cannot be used: DICOM \w+ .*\(HTTP 422\)$"))


def test_the_ask_button_works_from_the_keyboard(page: Page):
    page.get_by_label("Question").fill("Any findings?")
    page.get_by_label("Question").focus()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Ask":
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)


def test_layout_fits_a_tablet_without_sideways_scrolling(browser: Browser, console: str):
    context = browser.new_context(viewport={"width": 768, "height": 1024})
    try:
        page = context.new_page()
        page.goto(console + "/ui/")
        expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        for label in ("API key", "Image", "Question"):
            expect(page.get_by_label(label)).to_be_visible()
    finally:
        context.close()


def test_find_a_study_in_the_pacs_and_ask_about_one_of_its_instances(page: Page, seen: Seen):
    pacs = page.get_by_role("region", name="PACS")
    expect(pacs).to_be_visible()
    page.get_by_label("Modality").fill("CT")
    page.get_by_role("button", name="Search").click()
    studies = page.locator("#studies tbody tr")
    expect(studies.first).to_be_visible()
    assert all("CT" in row for row in studies.all_inner_texts())
    studies.first.get_by_role("button").click()
    series = page.locator("#series li")
    expect(series.first).to_be_visible()
    thumbnail = series.first.get_by_role("img")
    expect(thumbnail).to_be_visible()  # rendered by the gateway's own pipeline
    series.first.get_by_role("button", name=re.compile("^Ask about")).click()
    expect(page.locator("#source")).to_contain_text("PACS: CT")
    expect(page.locator("#preview-info")).to_contain_text("frame 1 of 1")
    page.get_by_label("Window").select_option("abdomen")
    expect(page.locator("#preview-info")).to_contain_text("preset abdomen")
    page.get_by_label("Question").fill("Describe this CT image.")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)
    shot(page, "pacs")
    assert seen.errors == []


@pytest.fixture(scope="module")
def keyed_console(tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """Keys on: a radiology key, and a key of a tenant allowed one request a minute."""
    keys_path = tmp_path_factory.mktemp("console-keys") / "keys.json"
    keys = KeyFile(
        tenants={
            "radiology": TenantPolicy(requests_per_minute=1000),
            "trial": TenantPolicy(requests_per_minute=1),
        }
    )
    key, trial = keys.create("radiology"), keys.create("trial")
    keys.save(keys_path)
    settings = Settings(
        engine="fake",
        served_model_name="gmai-vl-demo",
        api_keys_file=keys_path,
        api_keys_reload_interval=0,
    )
    service = build_embedded(settings, FakeEngine(token_interval=0.01))
    with ThreadedServer(service.app) as server:
        yield server.base_url, key, trial


def test_with_keys_on_no_key_is_a_clear_message_and_a_valid_key_answers(
    browser: Browser, keyed_console: tuple[str, str, str]
):
    base_url, key, _ = keyed_console
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(base_url + "/ui/")  # the page itself needs no key
        notice = page.locator("#notice")
        expect(notice).to_have_text("This gateway needs an API key. Enter your API key above.")
        page.get_by_label("Question").fill("Any findings?")
        page.get_by_label("Max tokens").fill(str(len(TOKENS)))
        page.get_by_role("button", name="Ask", exact=True).click()
        expect(page.locator("#ask-error")).to_contain_text("needs an API key")
        expect(page.get_by_role("log")).to_have_text("")
        page.get_by_label("API key").fill("gmai-wrong-notakey")
        page.get_by_role("button", name="Use key").click()
        expect(notice).to_contain_text("The API key was refused")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Use key").click()
        expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
        expect(notice).to_be_hidden()
        page.get_by_role("button", name="Ask", exact=True).click()
        expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)
        # The key is kept for the tab only (sessionStorage), never in localStorage.
        assert page.evaluate("sessionStorage.getItem('gmaivl.apiKey')") == key
        assert page.evaluate("localStorage.length") == 0
    finally:
        context.close()


@pytest.fixture
def keyed_page(browser: Browser, keyed_console: tuple[str, str, str]) -> Iterator[Page]:
    """A fresh page on the keyed console, its key not yet given."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(keyed_console[0] + "/ui/")
        expect(page.locator("#notice")).to_have_text(
            "This gateway needs an API key. Enter your API key above."
        )
        yield page
    finally:
        context.close()


def test_a_typed_key_is_the_key_used_on_ask_without_use_key(
    keyed_page: Page, keyed_console: tuple[str, str, str]
):
    page, key = keyed_page, keyed_console[1]
    page.get_by_label("API key").fill(key)
    expect(page.locator("#notice")).to_be_hidden()  # it asked for a key; one is there
    page.get_by_label("Question").fill("Any findings?")
    page.get_by_label("Max tokens").fill(str(len(TOKENS)))
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)
    expect(page.locator("#ask-error")).to_be_hidden()
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
    expect(page.locator("#live-workers")).to_have_text("1")  # the operations panel loaded
    assert page.evaluate("sessionStorage.getItem('gmaivl.apiKey')") == key


def test_a_new_user_types_the_key_chooses_an_image_and_asks(
    keyed_page: Page, keyed_console: tuple[str, str, str], tmp_path
):
    """The path of issue 24: key typed, image chosen, question, Ask; no "Use key"."""
    page = keyed_page
    page.get_by_label("API key").fill(keyed_console[1])
    page.get_by_label("Image").set_input_files(str(demo_png(tmp_path)))
    expect(page.get_by_alt_text("Model input")).to_be_visible()
    expect(page.locator("#preview-error")).to_be_hidden()
    page.get_by_label("Question").fill("Is there an opacity in this chest X-ray?")
    page.get_by_label("Max tokens").fill(str(len(TOKENS)))
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)
    for alert in ("#notice", "#ask-error", "#ops-error"):
        expect(page.locator(alert)).to_be_hidden()


def test_enter_in_the_key_field_loads_the_models_and_the_operations_panel(
    keyed_page: Page, keyed_console: tuple[str, str, str]
):
    page = keyed_page
    expect(page.locator("#live-workers")).to_have_text("\u2013")  # nothing loaded without a key
    page.get_by_label("API key").fill(keyed_console[1])
    page.get_by_label("API key").press("Enter")
    expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
    expect(page.locator("#live-workers")).to_have_text("1")
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#ops-error")).to_be_hidden()
    # A wrong key typed over it is used too, and said to be refused (not asked for).
    page.get_by_label("API key").fill("gmai-wrong-notakey")
    page.get_by_label("API key").press("Enter")
    expect(page.locator("#notice")).to_contain_text("The API key was refused")


def test_a_tenant_over_its_rate_reads_when_to_retry(
    browser: Browser, keyed_console: tuple[str, str, str]
):
    base_url, _, trial = keyed_console
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(base_url + "/ui/")
        page.get_by_label("API key").fill(trial)
        page.get_by_role("button", name="Use key").click()
        expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
        page.get_by_label("Max tokens").fill("2")
        ask = page.get_by_role("button", name="Ask", exact=True)
        ask.click()
        expect(page.get_by_role("log")).to_have_text("The image")
        expect(ask).to_be_enabled()
        ask.click()
        error = page.locator("#ask-error")
        expect(error).to_have_text(
            re.compile(r"^Too many requests: Rate limit reached .* Retry in \d+ s\.$")
        )
    finally:
        context.close()


def test_a_dropped_file_is_used_like_a_chosen_one(page: Page, tmp_path):
    data = demo_png(tmp_path).read_bytes()
    page.evaluate(
        """(bytes) => {
            const transfer = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
            transfer.items.add(file);
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        list(data),
    )
    expect(page.locator("#source")).to_contain_text("dropped.png (image/png")
    expect(page.locator("#preview-info")).to_contain_text("256 \u00d7 256 px")


def test_stop_ends_the_stream_and_keeps_what_came(page: Page):
    page.get_by_label("Max tokens").fill("40")  # ten seconds of tokens
    page.get_by_role("button", name="Ask", exact=True).click()
    log = page.get_by_role("log")
    expect(log).to_contain_text("The image")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#ask-error")).to_have_text("Stopped.")
    kept = log.text_content() or ""
    assert kept.startswith("The image") and len(kept) < 40 * 6
    expect(page.get_by_role("button", name="Ask", exact=True)).to_be_enabled()


def test_the_console_of_gmai_vl_serve_with_the_real_model(browser: Browser, tiny_checkpoint):
    """`gmai-vl serve` as a process (static files from the installed package), the
    tiny LLaVA on the transformers engine: a DICOM question answered in the log."""
    with serve_tiny(tiny_checkpoint) as base_url:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(base_url + "/ui/")
            expect(page.get_by_label("Model")).to_have_value("tiny")
            page.get_by_label("Image").set_input_files(get_testdata_file("MR_small.dcm"))
            expect(page.locator("#preview-info")).to_contain_text("from file")  # MR_small's own
            page.get_by_label("Max tokens").fill("6")
            page.get_by_role("button", name="Ask", exact=True).click()
            tokens = page.locator("#tokens")
            expect(tokens).to_have_text(
                re.compile(r"^[1-6] generated, \d+ in the prompt$"), timeout=60_000
            )
            # Sampled text of an untrained model: its content is not the point, its arrival is.
            expect(page.get_by_role("log")).to_have_attribute("data-state", "done")
            expect(page.locator("#ask-error")).to_be_hidden()
            expect(page.locator("#live-workers")).to_have_text("1")
        finally:
            context.close()


def test_read_study_stores_a_report_in_the_pacs_and_links_it(page: Page, orthanc: OrthancServer):
    """ "Read study" through the reads API: the read completes, the answer shows, and
    the structured report it links is the one stored in the PACS."""
    page.get_by_label("Modality").fill("MR")
    page.get_by_role("button", name="Search").click()
    studies = page.locator("#studies tbody tr")
    expect(studies.first).to_be_visible()
    studies.first.get_by_role("button").click()
    expect(page.locator("#series li").first).to_be_visible()
    page.get_by_role("button", name="Read study").click()
    status = page.locator("#read-status")
    expect(status).to_contain_text("Read completed", timeout=60_000)
    expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)
    link = status.get_by_role("link", name="Structured report (stored in the PACS)")
    with page.expect_download() as download:
        link.click()
    report = dcmread(download.value.path())
    assert report.Modality == "SR" and report.VerificationFlag == "UNVERIFIED"
    stored = httpx.get(
        f"{orthanc.dicomweb}/studies/{report.StudyInstanceUID}/series", auth=orthanc.auth
    ).json()
    assert report.SeriesInstanceUID in {s["0020000E"]["Value"][0] for s in stored}
