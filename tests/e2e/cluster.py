"""A distributed deployment on loopback: real redis-server, `gmai-vl gateway` and
`gmai-vl worker` processes, each owned by the test and stopped by PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import RedisServer, free_port, wait_ready

MODEL = "cluster"


class Cluster:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.redis = RedisServer().start()
        self.env = {
            **os.environ,
            "GMAIVL_HEARTBEAT_INTERVAL": "0.3",
            "GMAIVL_VISIBILITY_TIMEOUT": "1.5",
            "GMAIVL_FAKE_TOKEN_INTERVAL": "0.01",
            **env,
        }
        self.gateways: list[tuple[subprocess.Popen, str]] = []
        self.workers: list[tuple[subprocess.Popen, str]] = []

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def add_worker(self, max_concurrency: int = 8) -> str:
        port = free_port()
        process = self._spawn(
            [
                "worker",
                "--redis-url",
                self.redis.url,
                "--engine",
                "fake",
                "--served-model-name",
                MODEL,
                "--metrics-port",
                str(port),
                "--max-concurrency",
                str(max_concurrency),
                "--drain-grace",
                "2",
            ],
            f"worker{len(self.workers)}",
        )
        url = f"http://127.0.0.1:{port}"
        self.workers.append((process, url))
        return url

    def add_gateway(self) -> str:
        port = free_port()
        process = self._spawn(
            [
                "gateway",
                "--redis-url",
                self.redis.url,
                "--served-model-name",
                MODEL,
                "--port",
                str(port),
            ],
            f"gateway{len(self.gateways)}",
        )
        url = f"http://127.0.0.1:{port}"
        self.gateways.append((process, url))
        wait_ready(url, process=process, timeout=60)
        return url

    def worker_metric(self, url: str, series: str) -> float:
        text = httpx.get(url + "/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_worker_metrics(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/metrics", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(url)

    def kill_worker(self, index: int) -> None:
        self.workers[index][0].send_signal(signal.SIGKILL)
        self.workers[index][0].wait()

    def close(self) -> None:
        for process, _ in self.gateways + self.workers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.redis.stop()
