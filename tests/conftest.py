"""Shared fixtures: a freshly assembled tiny checkpoint, servers on free ports.

Real parts wherever a user has them: the checkpoint is assembled by our own
`gmai-vl model init`, servers are real uvicorn servers on loopback, clients are
the official `openai` SDK.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

from service.processes import RedisServer, free_port, wait_ready
from tests.oidc import OidcProvider
from tests.orthanc import OrthancServer


def png_data_url(width: int = 64, height: int = 48, color=(200, 20, 20)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_message(url: str, text: str = "Describe this image.") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        }
    ]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA assembled by the real CLI, once per test session."""
    return init_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def init_tiny(out: Path, seed: int) -> Path:
    """`gmai-vl model init --preset tiny` into `out` (another seed: other answers)."""
    command = ["model", "init", "--preset", "tiny", "--out", str(out), "--seed", str(seed)]
    subprocess.run([sys.executable, "-m", "service.cli", *command], check=True, capture_output=True)
    return out


class ThreadedServer:
    """A real uvicorn server for an app object, in a thread of this process, so a
    test can look inside the engine and queue it serves with."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_ready(self.base_url)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def serve_cli(
    flags: list[str], env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[str]:
    """`gmai-vl serve <flags>` as a child process, stopped by PID; yields its base URL.
    Its output goes to `log_path` (all of it: the PHI test reads it), else nowhere."""
    port = free_port()
    log = log_path.open("wb") if log_path is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", *flags, "--port", str(port)],
        # Auth off on purpose (local use on loopback); tests/service/security turn keys on.
        env={**os.environ, "GMAIVL_REQUEST_TIMEOUT": "60", "GMAIVL_AUTH": "off", **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process=process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        if log_path is not None:
            log.close()


def serve_tiny(
    checkpoint: Path, env: dict[str, str] | None = None, log_path: Path | None = None
) -> contextlib.AbstractContextManager[str]:
    """`gmai-vl serve --model <tiny>` (see serve_cli)."""
    flags = ["--model", str(checkpoint), "--served-model-name", "tiny"]
    return serve_cli(flags, env, log_path)


@pytest.fixture(scope="session")
def served_tiny(tiny_checkpoint: Path) -> Iterator[str]:
    with serve_tiny(tiny_checkpoint) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The procedural demo corpus, small: 8 training and 2 held-out studies per modality."""
    from training.data.demo import make_demo
    from training.demo_recipe import DemoConfig

    out = tmp_path_factory.mktemp("demo")
    make_demo(out, DemoConfig(train_per_modality=8, heldout_per_modality=2), progress=False)
    return out


@pytest.fixture(scope="session")
def trained_export(tiny_checkpoint: Path, demo_corpus: Path, tmp_path_factory) -> Path:
    """A checkpoint out of our training: a short stage III on the demo corpus, exported."""
    from training.train.config import StageConfig, TrainConfig
    from training.train.stages import run_stages

    stage = StageConfig("III", ("projector", "vision", "llm"), 2e-3, max_steps=20, batch_size=8)
    config = TrainConfig(
        model=str(tiny_checkpoint),
        data=str(demo_corpus / "example_list.json"),
        stages={3: stage},
        max_length=128,
        progress=False,
    )
    return run_stages(config, [3], tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def served_fake() -> Iterator[str]:
    """`gmai-vl serve --engine fake`: the real gateway, queue and worker; a fixed-pace
    token stream instead of a model (metrics, load tests)."""
    with serve_cli(["--engine", "fake", "--served-model-name", "fake"]) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A real Orthanc PACS on loopback (auth on, DICOMweb plugin), loaded with pydicom's
    test files through its REST API."""
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        server.upload_testdata()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A real OpenID Provider (npm oidc-provider, `make oidc-provider`) on loopback, for
    one test module: a client-credentials client; signing keys the test owns."""
    server = OidcProvider(tmp_path_factory.mktemp("oidc")).start()
    try:
        yield server
    finally:
        server.stop()
