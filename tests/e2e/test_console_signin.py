"""The console signs in at a real OpenID Provider (npm oidc-provider on loopback) in a
real browser (Debian's chromium through Playwright): the IdP's own login page, the
authorization code flow with PKCE as a public client, a question about an image
asked with the user's access token, and the audit event naming the user's `sub`."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from service.config import OidcSettings, Settings
from service.embedded import build_embedded
from service.engines.fake import TOKENS, FakeEngine
from service.processes import free_port
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer
from tests.e2e import test_console_browser
from tests.oidc import AUDIENCE, CONSOLE_CLIENT, Account, OidcProvider
from training.data.demo_images import synth_image

USER = "dr-alice-0042"
browser = test_console_browser.browser  # the fixture: Debian's chromium through Playwright
FULL_ANSWER = "".join(TOKENS)


@dataclass
class Stack:
    url: str
    provider: OidcProvider
    audit_path: Path

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@contextlib.contextmanager
def stack_with(tmp: Path, access_token_ttl: int = 600) -> Iterator[Stack]:
    """The IdP (with the console as a public client and one user) and the gateway."""
    port = free_port()
    console = f"http://127.0.0.1:{port}"
    provider = OidcProvider(
        tmp,
        accounts=[Account(USER, token_claims={"groups": ["radiology"]})],
        redirect_uris=[console + "/ui/"],
        access_token_ttl=access_token_ttl,
    ).start()
    keys = KeyFile(tenants={"radiology": TenantPolicy(max_images_per_request=2)})
    keys.save(tmp / "keys.json")  # tenants only: people sign in, no key is handed out
    settings = Settings(
        engine="fake",
        served_model_name="gmai-vl-demo",
        api_keys_file=tmp / "keys.json",
        audit_log=str(tmp / "audit.jsonl"),
        oidc=OidcSettings(
            issuer=provider.issuer,
            audience=AUDIENCE,
            console_client_id=CONSOLE_CLIENT,
            console_scope="openid offline_access gmaivl.chat gmaivl.ops",
            leeway=0,
        ),
    )
    service = build_embedded(settings, FakeEngine(token_interval=0.05))
    try:
        with ThreadedServer(service.app, port=port) as server:
            yield Stack(server.base_url, provider, tmp / "audit.jsonl")
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_with(tmp_path_factory.mktemp("signin")) as stack:
        yield stack


def sign_in(page: Page, stack: Stack) -> None:
    page.goto(stack.url + "/ui/")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.provider.issuer + "/**")  # the IdP's own login page
    page.locator("input[name=login]").fill(USER)
    page.locator("input[name=password]").fill("any password: the test IdP's dev login")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()  # consent
    page.wait_for_url(stack.url + "/ui/")  # back, the code exchanged and the URL cleaned
    expect(page.locator("#signin-who")).to_have_text(f"Signed in as {USER}")


def test_sign_in_at_the_idp_ask_about_an_image_and_the_audit_names_the_user(
    browser: Browser, stack: Stack, tmp_path: Path
):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    # What the console itself loads and calls (the IdP's login page loads its own).
    page.on(
        "request", lambda r: requests.append(r.url) if r.frame.url.startswith(stack.url) else None
    )
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and page.url.startswith(stack.url) else None
        ),
    )
    try:
        page.goto(stack.url + "/ui/")
        csp = page.evaluate(
            "async () => (await fetch('/ui/')).headers.get('content-security-policy')"
        )
        assert f"connect-src 'self' {stack.provider.issuer};" in csp
        expect(page.locator("#notice")).to_have_text(
            "This gateway needs you to sign in or to enter an API key."
        )
        sign_in(page, stack)
        expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
        errors.clear()  # the 401s of the page before signing in
        pixels, _ = synth_image("xray", "upper left", 128, np.random.default_rng(5))
        Image.fromarray(pixels).save(tmp_path / "xray.png")
        page.get_by_label("Image").set_input_files(str(tmp_path / "xray.png"))
        expect(page.get_by_alt_text("Model input")).to_be_visible()
        page.get_by_label("Max tokens").fill(str(len(TOKENS)))
        page.get_by_label("Question").fill("Is there an opacity?")
        page.get_by_role("button", name="Ask", exact=True).click()
        expect(page.get_by_role("log")).to_have_text(FULL_ANSWER)

        chats = _wait_for(stack, "/v1/chat/completions")
        assert chats[-1]["sub"] == USER and chats[-1]["iss"] == stack.provider.issuer
        assert chats[-1]["tenant"] == "radiology" and chats[-1]["key_id"] is None
        assert chats[-1]["images"] == 1 and chats[-1]["outcome"] == "ok"
        renders = _wait_for(stack, "/v1/images/render")
        assert renders[-1]["sub"] == USER
        # The page talked to the gateway and, for the code exchange, to the IdP only.
        page_origins = {u.split("/")[2] for u in requests if u.startswith("http")}
        assert page_origins <= {stack.url.split("/")[2], stack.provider.issuer.split("/")[2]}
        assert errors == []
        # The token lives in this tab's sessionStorage only; Sign out forgets it.
        assert page.evaluate("() => localStorage.length") == 0
        assert page.evaluate("() => !!sessionStorage.getItem('gmaivl.accessToken')")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        assert page.evaluate("() => sessionStorage.getItem('gmaivl.accessToken')") is None
        expect(page.locator("#notice")).to_contain_text("needs you to sign in")
    finally:
        context.close()


def test_the_token_is_renewed_before_it_expires(browser: Browser, tmp_path: Path):
    with stack_with(tmp_path, access_token_ttl=8) as stack:
        page = browser.new_page()
        try:
            sign_in(page, stack)
            first = page.evaluate("() => JSON.parse(sessionStorage.getItem('gmaivl.accessToken'))")
            # Renewed with the refresh token half-way through its 8 s (a minute before, when
            # it lives longer), so the page never sends an expired token.
            page.wait_for_function(
                f"() => JSON.parse(sessionStorage.getItem('gmaivl.accessToken'))"
                f".access_token !== {json.dumps(first['access_token'])}",
                timeout=15_000,
            )
            time.sleep(max(0.0, first["expires_at"] - time.time() + 1))  # the first one expired
            status = page.evaluate(
                """async () => (await fetch('/v1/models', {headers: {Authorization: 'Bearer '
                    + window.gmaivlAuth.bearer()}})).status"""
            )
            assert status == 200
            expect(page.locator("#signin-who")).to_have_text(f"Signed in as {USER}")
        finally:
            page.close()


def test_without_a_console_client_the_page_offers_keys_only(browser: Browser, tmp_path: Path):
    settings = Settings(engine="fake", served_model_name="gmai-vl-demo")
    with ThreadedServer(build_embedded(settings, FakeEngine(token_interval=0)).app) as server:
        page = browser.new_page()
        try:
            page.goto(server.base_url + "/ui/")
            expect(page.get_by_label("Model")).to_have_value("gmai-vl-demo")
            expect(page.get_by_role("button", name="Sign in")).to_be_hidden()
            expect(page.get_by_label("API key")).to_be_visible()
        finally:
            page.close()


def _wait_for(stack: Stack, route: str) -> list[dict]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = [e for e in stack.audit() if e["route"] == route]
        if events:
            return events
        time.sleep(0.05)
    raise AssertionError(f"no audit event for {route}")
