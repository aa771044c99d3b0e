"""The gateway never imports torch (it must start fast and stay small). Which part
may import which is tests/test_import_rules.py."""

from __future__ import annotations

import subprocess
import sys


def imported_after(code: str, modules: tuple[str, ...]) -> list[str]:
    check = f"import sys; {code}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_gateway_modules_do_not_import_torch_or_training():
    code = (
        "import service.embedded, service.gateway, service.worker_process, service.cli, "
        "service.api.app, service.worker, service.redis.gateway_queue"
    )
    assert imported_after(code, ("torch", "transformers", "training")) == []


def test_the_cli_with_every_command_group_loads_without_torch():
    code = "import service.cli; service.cli.build_parser()"
    assert imported_after(code, ("torch", "transformers")) == []
