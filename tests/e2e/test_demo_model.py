"""`gmai-vl serve` with no --model builds the demo corpus, trains the demo model once
(what `make run` does), serves `OUT/final`, and that model answers a held-out image
through the OpenAI SDK. The `demo-smoke` recipe keeps this inside the CI budget; the
full recipe's figures are in docs/training.md."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import openai

from tests.conftest import free_port, wait_ready
from training.train.heldout import is_correct


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_serve_without_model_trains_and_serves_the_demo(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "GMAIVL_DEMO_RECIPE": "demo-smoke"}  # fmt: skip
    cache = tmp_path / "cache" / "gmai-vl"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", timeout=280, process=process)
            heldout = cache / "demo-data-demo-smoke" / "heldout"
            records = json.loads((heldout / "annotations.json").read_text())
            modality = [r for r in records if r["question_type"] == "modality"]
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
            correct = 0
            for record in modality[:5]:
                question = record["conversations"][0]["value"].removeprefix("<image>\n")
                url = data_url(heldout / record["image"])
                r = client.chat.completions.create(
                    model="gmai-vl-demo",
                    max_tokens=16,
                    temperature=0,
                    messages=[{"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": question},
                    ]}],
                )  # fmt: skip
                answer = r.choices[0].message.content
                correct += is_correct("modality", record["conversations"][1]["value"], answer)
            assert correct >= 4, f"{correct}/5 held-out modality answers right"
        finally:
            process.terminate()
            process.wait(timeout=10)
    final = cache / "demo-demo-smoke" / "final"
    assert (final / "config.json").exists() and (final / "loss.png").exists()
    metadata = json.loads((final / "gmaivl.json").read_text())
    assert metadata["trained"] is True and metadata["recipe"] == "demo-smoke"
    assert "training it" in log.read_text()
