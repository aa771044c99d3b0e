"""The gateway never imports torch (it must start fast and stay small), `service`
never imports `training`, and `training` imports `service` only for DICOM rendering."""

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


# The one deliberate crossing: the DICOM-folder dataset converter renders pixels with
# the service's own DICOM path, so a model is trained on exactly what it will be served
# (a copy of the windowing code would drift). Nothing else in training imports service.
TRAINING_USES_SERVICE = {
    "training/data/converters/dicom_folder.py": {
        "from service import errors",
        "from service.config import ImageLimits",
        "from service.media.dicom import DicomOptions, dicom_to_rgb",
    },
}


def test_no_static_imports_between_service_and_training():
    root = Path(__file__).resolve().parents[2]
    for package, other in (("service", "training"), ("training", "service")):
        for path in (root / package).rglob("*.py"):
            allowed = TRAINING_USES_SERVICE.get(path.relative_to(root).as_posix(), set())
            for line in path.read_text().splitlines():
                stripped = line.strip()
                if stripped in allowed:
                    continue
                assert not stripped.startswith((f"import {other}", f"from {other}")), (
                    f"{path} imports {other}"
                )
