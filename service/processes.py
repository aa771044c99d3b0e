"""Starting and stopping gmai-vl gateway/worker processes and redis-server on
loopback, by PID — used by tests, the chaos run, capacity and loadtest.

`Cluster` is a distributed deployment on loopback: a real redis-server,
`gmai-vl gateway` and `gmai-vl worker` processes (`python -m service.cli ...`),
each owned by its creator and stopped by PID, never by name."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

MODEL = "cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(
    base_url: str,
    timeout: float = 120.0,
    process: subprocess.Popen | None = None,
    path: str = "/health/ready",
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not exit within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A real redis-server on a free loopback port, owned (and killable) by its creator."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class Cluster:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.redis = RedisServer().start()
        self.env = {
            **os.environ,
            "GMAIVL_HEARTBEAT_INTERVAL": "0.3",
            "GMAIVL_VISIBILITY_TIMEOUT": "1.5",
            "GMAIVL_FAKE_TOKEN_INTERVAL": "0.01",
            "GMAIVL_AUTH": "off",  # on purpose, on loopback; pass GMAIVL_API_KEYS_FILE for keys
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

    def add_worker(
        self,
        max_concurrency: int = 8,
        engine: tuple[str, ...] = ("fake",),
        model: str = MODEL,
        extra: tuple[str, ...] = (),
    ) -> str:
        """A worker process serving `model`; `engine` is the engine name and its flags,
        e.g. ("vllm", "--model", DIR, "--kv-cache-memory-bytes", "268435456")."""
        port = free_port()
        process = self._spawn(
            [
                "worker",
                "--redis-url",
                self.redis.url,
                "--engine",
                *engine,
                "--served-model-name",
                model,
                "--metrics-port",
                str(port),
                "--max-concurrency",
                str(max_concurrency),
                "--drain-grace",
                "2",
                *extra,
            ],
            f"worker{len(self.workers)}",
        )
        url = f"http://127.0.0.1:{port}"
        self.workers.append((process, url))
        return url

    def add_gateway(self, ready_timeout: float = 60, model: str | None = MODEL) -> str:
        """A gateway; `model` None: it knows only the models workers announce."""
        port = free_port()
        process = self._spawn(
            [
                "gateway",
                "--redis-url",
                self.redis.url,
                *(("--served-model-name", model) if model else ()),
                "--port",
                str(port),
            ],
            f"gateway{len(self.gateways)}",
        )
        url = f"http://127.0.0.1:{port}"
        self.gateways.append((process, url))
        wait_ready(url, process=process, timeout=ready_timeout)
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
        """SIGTERM to all, so workers stop their engines (a vLLM engine core is a child
        process: SIGKILL on the worker would orphan it), then SIGKILL what is left."""
        running = [p for p, _ in self.gateways + self.workers if p.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            stop_process(process, timeout=30)
        self.redis.stop()
