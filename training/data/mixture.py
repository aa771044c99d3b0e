"""The mixture file in the GMAI-VL repository's `example_list.json` format.

    {"<source>": {"image_dir": "/abs/images", "annotations": ["/abs/part-00000.jsonl"],
                  "sample_ratio": 1.0, "length": 1234, "data_augment": false}}

`annotations` may be one path or a list; files are JSONL shards or a JSON list.
`sample_ratio` scales how many of a source's records an epoch draws (1.0: all
once, 0.5: half, 2.0: each twice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_mixture(
    path: Path, sources: dict[str, tuple[Path, list[Path], int]], ratios: dict[str, float]
) -> None:
    """`sources`: name -> (image_dir, annotation files, record count)."""
    mixture = {
        name: {
            "image_dir": str(Path(image_dir).resolve()),
            "annotations": [str(Path(a).resolve()) for a in annotations],
            "sample_ratio": ratios.get(name, 1.0),
            "length": length,
            "data_augment": False,
        }
        for name, (image_dir, annotations, length) in sources.items()
    }
    path.write_text(json.dumps(mixture, indent=2) + "\n")


def read_annotations(path: Path) -> list[dict[str, Any]]:
    """Records from a JSON list or a JSONL file."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def read_mixture(path: Path) -> dict[str, dict[str, Any]]:
    """The mixture with `annotations` always a list of paths (relative ones resolved)."""
    mixture = json.loads(Path(path).read_text(encoding="utf-8"))
    for entry in mixture.values():
        files = entry["annotations"]
        files = [files] if isinstance(files, str) else files
        entry["annotations"] = [
            p if Path(p).is_absolute() else str(Path(path).parent / p) for p in files
        ]
        image_dir = Path(entry["image_dir"])
        entry["image_dir"] = str(image_dir if image_dir.is_absolute() else path.parent / image_dir)
        entry.setdefault("sample_ratio", 1.0)
    return mixture
