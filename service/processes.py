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


def _wait_pong(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


class RedisServer:
    """A real redis-server on a free loopback port, owned (and killable) by its creator;
    `args` are more redis-server options (e.g. ("--replicaof", "127.0.0.1", "6379"))."""

    def __init__(self, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = args
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
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_pong(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


SENTINEL_SERVICE = "gmaivl"


class SentinelGroup:
    """A Redis primary, `replicas` replicas and `sentinels` Sentinels
    (`redis-server CONF --sentinel`; Sentinel rewrites CONF, so it lives in `tmp`),
    all on loopback, all owned and killable by their creator. `url` is the
    `redis+sentinel://` URL clients use; `down_after_ms` how long the Sentinels
    wait before they call the primary down."""

    def __init__(
        self,
        tmp: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        replica_args: tuple[str, ...] = (),
    ) -> None:
        self.tmp = tmp
        self.primary = RedisServer().start()
        self.replicas = [
            RedisServer(args=("--replicaof", "127.0.0.1", str(self.primary.port), *replica_args))
            for _ in range(replicas)
        ]
        for replica in self.replicas:
            replica.start()
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen] = []
        for i, port in enumerate(self.sentinel_ports):
            conf = tmp / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.primary.port} "
                f"{max(1, sentinels // 2 + 1)}\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
                f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
            )
            log = (tmp / f"sentinel{i}.log").open("wb")
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
                )
            )
            _wait_pong(port)
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/0"
        self.wait_synced()

    def wait_synced(self, timeout: float = 20) -> None:
        """Until every replica is connected to the primary and the Sentinels see them."""
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = redis.Redis(port=self.primary.port).info("replication")
            seen = [
                redis.Redis(port=port).sentinel_master(SENTINEL_SERVICE).get("num-slaves", 0)
                for port in self.sentinel_ports
            ]
            if info.get("connected_slaves") == len(self.replicas) and all(
                n == len(self.replicas) for n in seen
            ):
                return
            time.sleep(0.1)
        raise TimeoutError("replicas did not sync")

    def primary_port(self) -> int:
        """The port the Sentinels now name as the primary."""
        import redis

        return int(
            redis.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
                SENTINEL_SERVICE
            )[1]
        )

    def kill_primary(self) -> RedisServer:
        """kill -9 the current primary; returns it (its process is gone)."""
        port = self.primary_port()
        victim = next(s for s in [self.primary, *self.replicas] if s.port == port)
        victim.stop()
        return victim

    def close(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(timeout=10)
        for server in [self.primary, *self.replicas]:
            server.stop()


class Cluster:
    def __init__(self, tmp: Path, redis_url: str | None = None, **env: str) -> None:
        """Gateways and workers on `redis_url` (default: a redis-server of its own)."""
        self.tmp = tmp
        self.redis = RedisServer()
        self.redis_url = redis_url or self.redis.start().url
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
                self.redis_url,
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
                self.redis_url,
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
