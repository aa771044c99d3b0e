"""`make loadtest`: a headless locust run against a local stack, CSV + HTML report.

    python -m loadtest.run                         # starts `gmai-vl serve --engine fake`
    python -m loadtest.run --engine transformers   # the tiny demo model on CPU
    python -m loadtest.run --host http://h:8000    # an existing stack (nothing started)

Writes <out>/locust_stats.csv, locust_failures.csv, locust_stats_history.csv,
locust_exceptions.csv and report.html, and prints the per-request summary. The
run is bounded by --duration; the local stack listens on loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from service.processes import free_port, wait_ready

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@contextlib.contextmanager
def local_stack(engine: str, env: dict[str, str]) -> Iterator[str]:
    """`gmai-vl serve` on a free loopback port, stopped by PID."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--engine", engine, "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process=process, timeout=300)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def run_locust(host: str, out: Path, users: int, spawn_rate: float, duration: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        duration,
        "--stop-timeout",
        "10",
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "report.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    return subprocess.run(command, timeout=_seconds(duration) + 120).returncode


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


def summary(out: Path) -> list[dict[str, str]]:
    with (out / "locust_stats.csv").open() as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="target an existing stack instead of starting one")
    parser.add_argument("--engine", default="fake", help="engine of the local stack")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=5)
    parser.add_argument("--duration", default="60s", help="locust --run-time, e.g. 30s, 5m")
    parser.add_argument("--out", type=Path, default=Path("loadtest/reports"))
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        host = args.host or stack.enter_context(
            local_stack(args.engine, {"GMAIVL_FAKE_TOKEN_INTERVAL": "0.01"})
        )
        code = run_locust(host, args.out, args.users, args.spawn_rate, args.duration)
    for row in summary(args.out):
        print(
            f"{row['Name']:<28} requests {row['Request Count']:>6}  failures "
            f"{row['Failure Count']:>5}  p50 {row['50%']:>6} ms  p95 {row['95%']:>6} ms"
        )
    print(f"report: {args.out / 'report.html'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
