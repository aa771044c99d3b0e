"""Small annotated datasets the tests write: images, masks, a NIfTI volume, COCO boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.templates import BANK


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def grey(width: int, height: int, value: int = 90) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def fillings(family: str, lang: str = "en", **fields) -> set[tuple[str, str]]:
    """Every (question, answer) the bank can produce for `family` with these label facts."""
    out = set()
    for question, answer in BANK[lang][family]:
        text = answer.format(**fields)
        out.add((question.format(**fields), text[:1].upper() + text[1:]))
    return out


def qa(record: dict) -> tuple[str, str]:
    human, gpt = record["conversations"]
    assert human["from"] == "human" and gpt["from"] == "gpt"
    assert human["value"].startswith("<image>\n")
    return human["value"].removeprefix("<image>\n"), gpt["value"]


def write_coco(root: Path) -> None:
    """Two 100x80 images: a.png with two nodules (upper left, lower right), b.png with none."""
    write_png(root / "images" / "a.png", grey(100, 80))
    write_png(root / "images" / "b.png", grey(100, 80))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
        ],
        "categories": [{"id": 7, "name": "nodule"}, {"id": 8, "name": "mass"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [70, 50, 20, 20]},
        ],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
