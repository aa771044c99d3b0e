"""Webhook delivery to a real receiver on loopback: signature, retries, allow-list."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service import errors
from service.media.fetch import FetchLimits, HostPolicy, SafeFetcher
from service.reads.webhook import SIGNATURE_HEADER, WebhookSender, check_webhook_url, verify

SECRET = "s3cret"
LOOPBACK = HostPolicy.of(["127.0.0.1"], ["127.0.0.0/8"])


class Receiver:
    """Answers the queued statuses in order (then 204), recording each POST."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.posts: list[tuple[bytes, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((body, self.headers[SIGNATURE_HEADER]))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver([500, 503])
    yield made
    made.server.shutdown()


async def test_retries_until_delivered_and_signs_every_attempt(receiver: Receiver):
    fetcher = SafeFetcher(FetchLimits(max_bytes=1 << 16))
    sender = WebhookSender(fetcher, LOOPBACK, SECRET, max_attempts=4, backoff=0.01)
    try:
        outcome = await sender.deliver(receiver.url, {"id": "read_1", "answer": "未见"}, "read_1")
    finally:
        await fetcher.aclose()
    assert outcome == "delivered" and len(receiver.posts) == 3
    for body, signature in receiver.posts:
        assert verify(SECRET, body, signature)
        assert "未见" in body.decode()
    assert not verify("other", receiver.posts[0][0], receiver.posts[0][1])


async def test_gives_up_after_max_attempts():
    made = Receiver([500] * 10)
    fetcher = SafeFetcher(FetchLimits(max_bytes=1 << 16))
    try:
        sender = WebhookSender(fetcher, LOOPBACK, SECRET, max_attempts=2, backoff=0.01)
        assert await sender.deliver(made.url, {"id": "read_1"}, "read_1") == "failed"
        assert len(made.posts) == 2
    finally:
        made.server.shutdown()
        await fetcher.aclose()


def test_a_host_off_the_allow_list_is_refused_at_submission():
    with pytest.raises(errors.InvalidRequest) as info:
        check_webhook_url("https://hooks.example/x", LOOPBACK)
    assert info.value.code == "webhook_not_allowed"
    check_webhook_url("http://127.0.0.1:9/x", LOOPBACK)
