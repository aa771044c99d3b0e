"""Source checkpoints in each format and their imports, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.model.import_ import sources
from training.model.import_.importer import ImportOptions, import_checkpoint

FORMATS = ("xtuner", "enhanced-llava", "llava")  # the import sources


@pytest.fixture(scope="session")
def source_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("import-sources")
    return {
        "xtuner": sources.make_xtuner(base / "xtuner"),  # 336 px: CLIP-L/14-336's 576 tokens
        "enhanced-llava": sources.make_enhanced_llava(base / "enhanced"),
        "llava": sources.make_llava(base / "llava"),
        "llava-hf": sources.make_llava_hf(base / "llava-hf"),  # native, not ours: no import
    }


@pytest.fixture(scope="session")
def imported(source_dirs: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("imported")
    out = {}
    for fmt, src in source_dirs.items():
        if fmt == "llava-hf":
            out[fmt] = src
            continue
        tower = src.parent / (src.name + "-clip") if fmt == "llava" else None
        options = ImportOptions(vision_tower=tower, progress=False, max_shard_bytes=1 << 20)
        import_checkpoint(src, base / fmt, options)
        out[fmt] = base / fmt
    return out
