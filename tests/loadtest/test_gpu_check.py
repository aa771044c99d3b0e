"""The GPU check's dry run: `loadtest/gpu_check.py --tiny --device cpu` takes the path
the device run takes (an xtuner source built in bf16, `gmai-vl model import --dtype
bfloat16`, `gmai-vl serve --engine transformers`, streams at 1, 8 and 32, greedy
agreement with a direct `generate`) and reports as it goes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)  # build, import, serve and a direct load of a tiny model
def test_the_dry_run_measures_and_agrees(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "loadtest/gpu_check.py"), "--tiny", "--device", "cpu",
         "--tokens", "4", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=880,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert "error" not in report
    assert report["environment"]["device"] == "cpu"
    assert "as xtuner" in report["import"]["said"] and "dtype bfloat16" in report["import"]["said"]
    imported = tmp_path / "work/imported"
    assert json.loads((imported / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(imported / "model.safetensors"), "pt") as weights:
        names = weights.keys()  # safe_open has no __iter__
        assert {weights.get_slice(k).get_dtype() for k in names} == {"BF16"}
    assert report["serve"]["load_seconds"] > 0 and report["serve"]["memory_mib"] > 0
    levels = report["levels"]
    assert [row["streams"] for row in levels] == [1, 8, 32]
    assert [row["requests"] for row in levels] == [3, 8, 32]
    for row in levels:
        assert row["errors"] == 0 and row["tokens_per_s"] > 0
        assert 0 < row["ttft_p50_ms"] <= row["ttft_p99_ms"]
    agreement = report["agreement"]
    assert agreement["agree"] is True and len(agreement["gateway"]) > 0
    prompt = agreement["prompt_tokens"]
    assert prompt["gateway"] == prompt["generate"] > 576  # the image's 576 tokens + text
    table = (out / "gpu_check.md").read_text()
    assert "| 32 | 32 | 4 |" in table and "| 1.00 |" in table and "**holds**" in table
