"""Detection datasets in COCO layout: `annotations.json` (images, annotations with
`bbox` = [x, y, width, height] in pixels, categories) and the image files under
`images`. Boxes give each category's count and the quadrants of their centres;
categories without a box in an image get a "no"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.data.converters.base import (
    BadSourceFile,
    SourceSpec,
    image_size,
    item_rng,
    to_records,
)
from training.data.facts import Box, box_facts
from training.data.records import Record
from training.data.templates import structure_qas


class DetectionConverter:
    dim = "2d"
    kind = "det"

    def items(self, spec: SourceSpec) -> list[dict[str, Any]]:
        """One item per COCO image: its file name and its boxes (category names)."""
        coco = json.loads((spec.root / spec.annotations).read_text(encoding="utf-8"))
        categories = {c["id"]: c["name"] for c in coco["categories"]}
        boxes: dict[int, list[list[Any]]] = {}
        for ann in coco.get("annotations", []):
            boxes.setdefault(ann["image_id"], []).append(
                [categories.get(ann["category_id"]), *ann["bbox"]]
            )
        names = sorted(categories.values())
        return [
            {"file": img["file_name"], "boxes": boxes.get(img["id"], []), "names": names}
            for img in sorted(coco["images"], key=lambda i: i["file_name"])
        ]

    def image_dir(self, spec: SourceSpec, out: Path) -> Path:
        return spec.root / spec.images

    def convert(self, spec: SourceSpec, item: dict[str, Any], out: Path) -> list[Record]:
        path = spec.root / spec.images / item["file"]
        if not path.is_file():
            raise BadSourceFile("image file missing")
        width, height = image_size(path)
        boxes = []
        for category, x, y, w, h in item["boxes"]:
            if category is None:
                raise BadSourceFile("box with an unknown category id")
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width + 1 or y + h > height + 1:
                raise BadSourceFile("box outside the image")
            boxes.append(Box(category, float(x), float(y), float(w), float(h)))
        rng = item_rng(spec, item["file"])
        lang = rng.choice(spec.languages)
        facts = box_facts(boxes, width, height)
        qas = structure_qas(spec.modality, facts, item["names"], rng, lang)
        return to_records(spec, self.dim, self.kind, item["file"], (width, height), qas, lang)
