"""`gmai-vl eval` end to end against a real `gmai-vl serve`: table printed, JSON,
Markdown and PNG written, a killed run resumes without asking again, compare works."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import httpx

from tests.training.eval.fixtures import write_mcq_tsv
from training.eval.runner import load_cache


def chat_2xx(base_url: str) -> float:
    metrics = httpx.get(base_url + "/metrics").text
    match = re.search(
        r'gmaivl_requests_total\{model="tiny",route="/v1/chat/completions",'
        r'status_class="2xx"\} ([0-9.]+)',
        metrics,
    )
    return float(match.group(1)) if match else 0.0


def eval_command(served_tiny, benchmark, out, *extra):
    return [
        sys.executable,
        "-m",
        "service.cli",
        "eval",
        "--benchmark",
        str(benchmark),
        "--base-url",
        served_tiny + "/v1",
        "--model",
        "tiny",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_eval_runs_resumes_and_compares(served_tiny, tmp_path):
    benchmark = write_mcq_tsv(tmp_path / "fixture_mcq.tsv")
    out = tmp_path / "runs"
    cache = out / "fixture_mcq" / "tiny" / "predictions.jsonl"

    # 1. a run killed after its first answers
    first = subprocess.Popen(
        eval_command(served_tiny, benchmark, out, "--concurrency", "1", "--max-tokens", "300")
    )
    deadline = time.monotonic() + 60
    while not (cache.exists() and load_cache(cache)) and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    cached = len(load_cache(cache))
    assert 1 <= cached < 5

    # 2. the rerun asks only for what is missing
    before = chat_2xx(served_tiny)
    done = subprocess.run(
        eval_command(served_tiny, benchmark, out), capture_output=True, text=True, check=True
    )
    assert chat_2xx(served_tiny) - before == 5 - cached
    assert "| overall |  | 5 |" in done.stdout
    results = json.loads((out / "fixture_mcq" / "tiny" / "results.json").read_text())
    assert results["overall"]["n"] == 5 and results["errors"] == 0
    assert set(results["breakdowns"]) == {"category", "modality"}
    assert (out / "fixture_mcq" / "tiny" / "results.md").read_text().startswith("## fixture_mcq")
    assert (out / "fixture_mcq" / "tiny" / "results.png").read_bytes()[:4] == b"\x89PNG"

    # 3. compare two runs
    a = out / "fixture_mcq" / "tiny" / "results.json"
    b = tmp_path / "b.json"
    better = {
        **results,
        "model": "tiny-ft",
        "overall": {**results["overall"], "accuracy": results["overall"]["accuracy"] + 20},
    }
    b.write_text(json.dumps(better))
    shown = subprocess.run(
        [sys.executable, "-m", "service.cli", "eval", "compare", str(a), str(b)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| overall |  |" in shown and "+20.00" in shown and "tiny-ft" in shown


def test_eval_reports_bad_usage(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "service.cli", "eval", "--model", "m"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "--benchmark" in missing.stderr
    (tmp_path / "x.csv").write_text("a")
    wrong = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "eval",
            "--benchmark",
            str(tmp_path / "x.csv"),
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
        ],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and ".tsv" in wrong.stderr
