"""The gateway never imports torch (it must start fast and stay small), and
`service` never imports `training`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def imported_after(code: str, modules: tuple[str, ...]) -> list[str]:
    check = f"import sys; {code}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_gateway_modules_do_not_import_torch_or_training():
    code = "import service.server, service.cli, service.api.app, service.worker"
    assert imported_after(code, ("torch", "transformers", "training")) == []


def test_the_cli_with_every_command_group_loads_without_torch():
    code = "import service.cli; service.cli.build_parser()"
    assert imported_after(code, ("torch", "transformers")) == []


def test_no_static_imports_between_service_and_training():
    root = Path(__file__).resolve().parents[2]
    for package, other in (("service", "training"), ("training", "service")):
        for path in (root / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                stripped = line.strip()
                assert not stripped.startswith((f"import {other}", f"from {other}")), (
                    f"{path} imports {other}"
                )
