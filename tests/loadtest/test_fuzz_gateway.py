"""Schemathesis against the gateway's own OpenAPI schema, a bounded run (`make fuzz`
runs the same for longer): zero 5xx, zero responses outside the documented schema."""

from __future__ import annotations

import socket

import httpx

from loadtest.fuzz_gateway import fuzz, is_transport_rejection, start_gateway


def test_bounded_fuzz_run_finds_no_failures(tmp_path):
    base_url, key, server = start_gateway(tmp_path)
    try:
        report = fuzz(base_url, key, seconds=0, examples_per_round=30)
    finally:
        server.should_exit = True
    assert report.cases >= 100
    assert report.failures == []
    assert all(status < 500 for status in report.statuses)
    assert 200 in report.statuses and 400 in report.statuses  # valid and invalid cases ran


def _raw_request(base_url: str, head: bytes) -> tuple[int, dict[str, str], str]:
    """Send `head` as is (no client would send it) and parse the answer by hand."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply:
                top, _, body = reply.partition(b"\r\n\r\n")
                lines = top.decode("latin-1").split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in lines[1:])
                if len(body) >= int(headers.get("content-length", 0)):
                    return int(lines[0].split()[1]), headers, body.decode()
    raise AssertionError("no complete answer")


MALFORMED_FRAMING = [
    b"Content-Length: abc",
    b"Content-Length: -1",
    b"Content-Length: 1, 2",
    b"Content-Length: 99999999999999999999999",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5",
    b"X-Priority: st\x00at",
]


def test_malformed_framing_is_a_transport_rejection_and_app_errors_are_not(tmp_path):
    """What the fuzz run counts apart: the parser's 400, which never reaches the app
    (no X-Request-Id). The app's own 400s and 401s stay checked against the schema."""
    base_url, key, server = start_gateway(tmp_path)
    try:
        for header in MALFORMED_FRAMING:
            head = b"GET /v1/models/fuzz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
            assert is_transport_rejection(*_raw_request(base_url, head)), header
        bad_json = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{"
        ).encode()
        status, headers, text = _raw_request(base_url, bad_json)
        assert status == 400 and "x-request-id" in headers
        assert not is_transport_rejection(status, headers, text)
        assert httpx.get(base_url + "/health/ready").status_code == 200
    finally:
        server.should_exit = True
