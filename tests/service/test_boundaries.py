"""The gateway never imports torch (it must start fast and stay small), and
`service` never imports `training`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_gateway_modules_do_not_import_torch_or_training():
    code = (
        "import sys, service.server, service.cli, service.api.app, service.worker; "
        "bad = [m for m in ('torch', 'transformers', 'training') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_static_imports_between_service_and_training():
    root = Path(__file__).resolve().parents[2]
    for package, other in (("service", "training"), ("training", "service")):
        for path in (root / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                stripped = line.strip()
                assert not stripped.startswith((f"import {other}", f"from {other}")), (
                    f"{path} imports {other}"
                )
