"""`gmai-vl serve` with no --model builds the demo checkpoint under the user cache
on first use, says plainly it is untrained, and serves it (what `make run` does)."""

from __future__ import annotations

import os
import subprocess
import sys

import openai

from tests.conftest import free_port, image_message, png_data_url, wait_ready


def test_serve_without_model_creates_and_serves_the_demo(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", process=process)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
            r = client.chat.completions.create(
                model="gmai-vl-demo", messages=image_message(png_data_url()), max_tokens=4
            )
            assert r.choices[0].finish_reason in ("stop", "length")
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert (tmp_path / "cache" / "gmai-vl" / "demo-tiny" / "config.json").exists()
    assert "UNTRAINED" in log.read_text()
