"""The import rules of docs/architecture.md, enforced on every module's imports
(top-level and inside functions): which part of the code may import which.

A part is a package (`service.api`) or a module (`service.worker`); it may
import itself, the parts listed for it, and anything outside the project.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FOUNDATION = {
    "service",
    "service.errors",
    "service.core",
    "service.tracing",
    "service.http_transport",
}  # `service`: __version__
COMPOSITION = "*"  # may import any part of the service

RULES: dict[str, set[str] | str] = {
    "service": set(),  # __init__: the version
    "service.errors": set(),
    "service.core": {"service.errors"},
    "service.tracing": set(),
    "service.http_transport": set(),
    "service.config": FOUNDATION,
    "service.metrics": FOUNDATION,
    "service.audit": FOUNDATION,
    "service.media": FOUNDATION | {"service.config"},
    "service.security": FOUNDATION | {"service.config"},
    "service.engines": FOUNDATION | {"service.config"},
    "service.queue": FOUNDATION,
    "service.responses": FOUNDATION,
    # what every endpoint shares beneath HTTP: request context, tenant gate, job path
    "service.serving": FOUNDATION
    | {"service.config", "service.metrics", "service.audit", "service.queue", "service.security"},
    # the study-read lifecycle, for every door (the HTTP API, the DICOM node)
    "service.reads": FOUNDATION
    | {
        "service.config",
        "service.metrics",
        "service.audit",
        "service.media",
        "service.queue",
        "service.security",
        "service.serving",
    },
    "service.redis": FOUNDATION
    | {
        "service.queue",
        "service.metrics",
        "service.security",
        "service.reads",
        "service.responses",
    },
    "service.api": FOUNDATION
    | {
        "service.config",
        "service.metrics",
        "service.audit",
        "service.media",
        "service.queue",
        "service.security",
        "service.serving",
        "service.reads",
        "service.responses",
    },
    # the DICOM node: a door into reads (SCP, spool, rules, SR sender)
    "service.dicom_node": FOUNDATION
    | {
        "service.config",
        "service.metrics",
        "service.media",
        "service.reads",
        "service.security",
        "service.serving",
    },
    "service.dicom_node.process": COMPOSITION,  # `gmai-vl dicom-node`: builds a process
    "service.dicom_node.cli": COMPOSITION,
    "service.console": set(),  # static files of the browser console; no code
    "service.worker": FOUNDATION | {"service.engines", "service.queue", "service.metrics"},
    "service.worker_http": FOUNDATION,
    "service.processes": FOUNDATION,
    "service.otlp_receiver": FOUNDATION,
    # composition roots: they build processes out of the parts above
    "service.components": COMPOSITION,
    "service.gateway": COMPOSITION,
    "service.embedded": COMPOSITION,
    "service.worker_process": COMPOSITION,
    "service.settings_cli": FOUNDATION | {"service.config"},
    "service.cli": COMPOSITION,
    "service.settings_doc": COMPOSITION,  # docs/settings.md from the settings and the CLI
    # training uses service only to render DICOM exactly as it is served
    "training": {"service", "service.errors", "service.config", "service.media"},
}

# The one module of training allowed to import service (see RULES["training"]).
TRAINING_USES_SERVICE = {"training/data/converters/dicom_folder.py"}


def part_of(module: str) -> str | None:
    """The most specific part a dotted module name belongs to."""
    candidates = [p for p in RULES if module == p or module.startswith(p + ".")]
    return max(candidates, key=len) if candidates else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from service import errors` names the module service.errors
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return [n for n in names if n.split(".")[0] in ("service", "training")]


def violations() -> list[str]:
    found = []
    for package in ("service", "training"):
        for path in sorted((ROOT / package).rglob("*.py")):
            source = part_of(module_name(path))
            if source is None:
                found.append(f"{module_name(path)}: belongs to no part; add it to RULES")
                continue
            allowed = RULES[source]
            for imported in imports_of(path):
                target = part_of(imported)
                if target in (None, source) or allowed == COMPOSITION:
                    continue
                if target.startswith("training"):
                    ok = source.startswith("training")
                elif source == "training":
                    rel = path.relative_to(ROOT).as_posix()
                    ok = rel in TRAINING_USES_SERVICE and target in allowed
                else:
                    ok = target in allowed
                if not ok:
                    found.append(f"{module_name(path)} imports {imported} ({source} -> {target})")
    return found


def test_every_import_follows_the_rules():
    assert violations() == []


def test_the_rules_catch_a_crossing(tmp_path, monkeypatch):
    """The checker itself fails on a forbidden import (so the test above can fail)."""
    assert part_of("service.api.routes") == "service.api"
    assert part_of("service.redis.keys") == "service.redis"
    bad = ROOT / "service" / "security" / "_rule_probe.py"
    bad.write_text("from service.redis import keys\n")
    try:
        assert violations() == [
            "service.security._rule_probe imports service.redis.keys "
            "(service.security -> service.redis)"
        ]
    finally:
        bad.unlink()
