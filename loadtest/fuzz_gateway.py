"""Fuzz the gateway with schemathesis against its own OpenAPI schema.

    python loadtest/fuzz_gateway.py --seconds 300      (make fuzz; FUZZ_SECONDS)

Starts an embedded gateway (fake engine, API keys on) on loopback, then runs
rounds of generated requests, valid and invalid per the schema, against every
operation until the time is up. Checks: no 5xx, status codes, content types,
headers and bodies as the schema documents them. Half the chat requests name
the served model, so they get past the model check into validation, limits and
generation. Prints cases tried and failures, writes them to --out as JSON;
exits 1 on any failure. The same runner, with a small budget, is a test
(tests/loadtest/test_fuzz_gateway.py).

Transport-level rejections are counted apart, not as failures: a request whose
HTTP framing is malformed (a `content-length` that is not a number, NUL in a
header) is refused by the HTTP server's parser (uvicorn: 400 text/plain
`Invalid HTTP request received.`, connection closed) before any application
code runs. No route can document it: it is not an answer of the API, which
never saw the request. It is recognised by its exact body and the missing
`X-Request-Id` that every answer of the app carries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
import hypothesis.errors
import schemathesis

# schemathesis.specs.openapi.schemas imported here, not lazily inside `from_url` during
# a test: pytest rewrites schemathesis (a plugin) as it is imported, and that compile
# once failed deep in a loaded run with CPython 3.11's "AST constructor recursion depth
# mismatch" SystemError.
import schemathesis.specs.openapi.schemas
import uvicorn
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.processes import free_port, wait_ready

MODEL = "fuzz"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# What uvicorn answers, before the app, to a request its HTTP parser refuses.
TRANSPORT_REJECTION = "Invalid HTTP request received."


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    transport_rejections: int = 0  # refused by the HTTP parser, never reached the app


def is_transport_rejection(status: int, headers: Mapping[str, str], text: str) -> bool:
    """The HTTP server's own 400 for malformed framing (see the module docstring)."""
    return status == 400 and "x-request-id" not in headers and text == TRANSPORT_REJECTION


def fuzz(base_url: str, key: str, seconds: float, examples_per_round: int = 25) -> FuzzReport:
    """Rounds over every operation and both generation modes until `seconds` pass."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    report = FuzzReport()
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + seconds
    round_ = 0
    while True:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                checks = CHECKS + ([negative_data_rejection] if mode is mode.NEGATIVE else [])
                _run(operation, mode, checks, base_url, headers, examples_per_round, round_,
                     report)  # fmt: skip
        round_ += 1
        if time.monotonic() >= deadline:
            return report


def _run(operation, mode, checks, base_url, headers, examples, seed, report) -> None:
    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def one(case) -> None:
        report.cases += 1
        if isinstance(case.body, dict) and "model" in case.body and report.cases % 2:
            case.body["model"] = MODEL
        try:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
            if is_transport_rejection(response.status_code, response.headers, response.text):
                report.transport_rejections += 1
                return
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # a failed check: recorded, go on
            report.failures.append(
                {"operation": operation.label, "mode": mode.value, "failure": str(exc)[:2000]}
            )

    # Unsatisfiable: nothing to make invalid (an operation without parameters or body).
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        one()


def start_gateway(tmp: Path) -> tuple[str, str, uvicorn.Server]:
    """An embedded gateway with the fake engine and API keys on, in a thread."""
    from service.config import Settings
    from service.embedded import build_embedded
    from service.engines.fake import FakeEngine
    from service.security.keys import KeyFile

    keys = KeyFile()
    key = keys.create("fuzz")
    keys.save(tmp / "keys.json")
    settings = Settings(
        engine="fake", served_model_name=MODEL, api_keys_file=tmp / "keys.json",
        max_body_bytes=1024 * 1024, body_timeout=5,
    )  # fmt: skip
    app = build_embedded(settings, FakeEngine(token_interval=0)).app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url)
    return base_url, key, server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time to fuzz for")
    parser.add_argument("--examples", type=int, default=25, help="cases per operation per round")
    parser.add_argument("--out", type=Path, default=Path("fuzz-report.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base_url, key, server = start_gateway(Path(tmp))
        started = time.monotonic()
        try:
            report = fuzz(base_url, key, args.seconds, args.examples)
        finally:
            server.should_exit = True
    elapsed = time.monotonic() - started
    args.out.write_text(json.dumps(report.__dict__, indent=2))
    print(f"fuzzed {elapsed:.0f} s: {report.cases} cases, {len(report.failures)} failures; "
          f"statuses {dict(sorted(report.statuses.items()))}; "
          f"{report.transport_rejections} refused by the HTTP parser; "
          f"report: {args.out}")  # fmt: skip
    for failure in report.failures[:10]:
        print(f"- {failure['operation']} ({failure['mode']}): {failure['failure'][:500]}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
