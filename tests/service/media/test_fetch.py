"""Safe fetching against real HTTP servers on loopback: allow-list, address checks,
redirects, timeouts, byte cap and content type."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service import errors
from service.media.fetch import FetchLimits, HostPolicy, SafeFetcher

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
IMAGE_TYPES = frozenset({"image/png"})


class Handler(BaseHTTPRequestHandler):
    """Routes by path; `other` is the base URL of a second host for cross-host redirects."""

    other = ""
    paths: list[str] = []
    dripped = 0  # bytes /drip wrote before the client hung up

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        Handler.paths.append(self.path)
        route = {
            "/ok.png": self.ok,
            "/same-host-redirect": lambda: self.redirect("/ok.png"),
            "/other-host-redirect": lambda: self.redirect(Handler.other + "/ok.png"),
            "/loop": lambda: self.redirect("/loop"),
            "/slow": self.slow,
            "/drip": self.drip,
            "/endless": self.endless,
            "/huge-length": self.huge_length,
            "/html": lambda: self.send(b"<html></html>", "text/html"),
        }.get(self.path, lambda: self.send_error(404))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route()  # a broken pipe: the client gave up, as it should

    def send(self, body: bytes, content_type: str = "image/png") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def ok(self) -> None:
        self.send(PNG)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def slow(self) -> None:
        time.sleep(2)
        self.send(PNG)

    def drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        Handler.dripped = 0
        for _ in range(100):  # one byte every 0.1 s: never a read timeout, always slow
            self.wfile.write(b"x")
            self.wfile.flush()
            Handler.dripped += 1
            time.sleep(0.1)

    def endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        chunk = b"\0" * 65536
        for _ in range(10_000):  # 640 MB if nobody stops reading
            self.wfile.write(chunk)

    def huge_length(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(4 * 2**30))
        self.end_headers()


def serve(port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = serve()
    other = serve()
    Handler.other = f"http://localhost:{other.server_address[1]}"
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        for s in (server, other):
            s.shutdown()
            s.server_close()


LOOPBACK = HostPolicy.of(["127.0.0.1"])


async def fetch(url: str, policy: HostPolicy = LOOPBACK, **limits):
    fetcher = SafeFetcher(
        FetchLimits(**{"max_bytes": 1_000_000, "read_timeout": 0.5, "total_timeout": 1.5, **limits})
    )
    try:
        return await fetcher.fetch(
            url, policy=policy, accept="image/png", content_types=IMAGE_TYPES, param="p"
        )
    finally:
        await fetcher.aclose()


async def refused(exc_type, url: str, code: str | None = None, **kwargs):
    with pytest.raises(exc_type) as info:
        await fetch(url, **kwargs)
    assert type(info.value) is exc_type
    if code is not None:
        assert info.value.code == code
    assert info.value.param == "p"
    return info.value


async def test_allow_listed_ip_literal_is_fetched(origin):
    fetched = await fetch(origin + "/ok.png")
    assert fetched.media_type == "image/png" and fetched.body == PNG


async def test_host_off_the_allow_list_is_refused_without_connecting():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        for host in ("localhost", "127.0.0.2", "pacs.invalid"):
            await refused(
                errors.ImageFetchFailed, f"http://{host}:{port}/x.png", "image_url_not_allowed"
            )
        # The kernel queues a completed handshake even before accept(): had anything
        # connected, accept() would return it.
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


async def test_allow_listed_name_resolving_to_loopback_is_refused(origin):
    port = origin.rsplit(":", 1)[1]
    exc = await refused(
        errors.ImageFetchFailed,
        f"http://localhost:{port}/ok.png",
        "image_url_not_allowed",
        policy=HostPolicy.of(["localhost"]),
    )
    assert "private" in exc.message


async def test_private_network_allowed_when_listed(origin):
    port = origin.rsplit(":", 1)[1]
    policy = HostPolicy.of(["localhost"], ["127.0.0.0/8", "::1/128"])
    assert (await fetch(f"http://localhost:{port}/ok.png", policy=policy)).body == PNG


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1", "0.0.0.0"]
)
def test_private_and_link_local_addresses_are_not_public(address):
    import ipaddress

    policy = HostPolicy.of(["pacs.example"])
    assert not policy.allows_address("pacs.example", ipaddress.ip_address(address))
    assert policy.allows_address("pacs.example", ipaddress.ip_address("93.184.216.34"))


async def test_same_host_redirect_is_followed(origin):
    assert (await fetch(origin + "/same-host-redirect")).body == PNG


async def test_redirect_to_another_host_is_refused(origin):
    Handler.paths.clear()
    policy = HostPolicy.of(["127.0.0.1", "localhost"], ["127.0.0.0/8", "::1/128"])
    await refused(
        errors.ImageFetchFailed,
        origin + "/other-host-redirect",
        "image_url_redirect_refused",
        policy=policy,
    )
    assert Handler.paths == ["/other-host-redirect"]  # the other host was never asked


async def test_redirect_loop_stops(origin):
    await refused(errors.ImageFetchFailed, origin + "/loop", "image_url_redirect_refused")


# Bounded by work, not wall-clock time (which flakes under load): the servers below
# would answer in full if the fetcher waited, so a refusal is the timeout at work.


async def test_slow_server_times_out_with_a_4xx(origin):
    # The answer comes after 2 s; the read timeout is 0.5 s: waiting would succeed.
    await refused(errors.ImageFetchFailed, origin + "/slow", "image_fetch_timeout")


async def test_dripping_server_hits_the_total_deadline(origin):
    exc = await refused(errors.ImageFetchFailed, origin + "/drip", "image_fetch_timeout")
    assert exc.status_code == 400
    # The fetcher hung up long before the 100th byte (a complete body would have passed).
    assert Handler.dripped < 100


async def test_endless_body_is_cut_at_the_byte_cap(origin):
    exc = await refused(errors.ImageTooLarge, origin + "/endless", total_timeout=10)
    assert exc.status_code == 413


async def test_declared_length_over_the_cap_is_refused_before_reading(origin):
    await refused(errors.ImageTooLarge, origin + "/huge-length")


async def test_wrong_content_type_is_refused(origin):
    await refused(errors.InvalidRequest, origin + "/html", "unsupported_image_type")


async def test_http_error_is_a_400_naming_the_status(origin):
    exc = await refused(errors.ImageFetchFailed, origin + "/missing.png", "image_fetch_failed")
    assert "404" in exc.message


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x.png", "file:///etc/passwd", "http://user:pw@127.0.0.1/x.png"]
)
async def test_other_schemes_and_credentials_in_urls_are_refused(url):
    await refused(errors.InvalidRequest, url, "invalid_image_url")


async def test_error_messages_never_quote_the_path(origin):
    exc = await refused(errors.ImageFetchFailed, origin + "/missing.png?patient=DOE")
    assert "DOE" not in exc.message and "missing" not in exc.message
