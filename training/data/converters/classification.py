"""Classification datasets: one folder per class, or a CSV of image path and label."""

from __future__ import annotations

import csv
from pathlib import Path

from training.data.converters.base import (
    BadSourceFile,
    SourceSpec,
    image_files,
    image_size,
    item_rng,
    to_records,
)
from training.data.records import Record
from training.data.templates import classification_qas


class ClassificationConverter:
    dim = "2d"
    kind = "cls"

    def items(self, spec: SourceSpec) -> list[tuple[str, str]]:
        """(image path relative to root, class) pairs."""
        if spec.layout == "folder":
            return [
                (path.relative_to(spec.root).as_posix(), path.relative_to(spec.root).parts[0])
                for path in image_files(spec.root)
                if len(path.relative_to(spec.root).parts) > 1
            ]
        if spec.layout == "csv":
            with (spec.root / spec.csv).open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            missing = {spec.image_column, spec.label_column} - set(rows[0] if rows else {})
            if missing:
                raise ValueError(f"source {spec.name}: CSV lacks columns {sorted(missing)}")
            return [(r[spec.image_column], r[spec.label_column].strip()) for r in rows]
        raise ValueError(f"source {spec.name}: unknown classification layout {spec.layout!r}")

    def image_dir(self, spec: SourceSpec, out: Path) -> Path:
        return spec.root

    def classes(self, items: list[tuple[str, str]]) -> list[str]:
        return sorted({label for _, label in items if label})

    def convert(self, spec: SourceSpec, item: tuple[str, str], out: Path) -> list[Record]:
        image, label = item
        if not label:
            raise BadSourceFile("empty label")
        path = spec.root / image
        if not path.is_file():
            raise BadSourceFile("image file missing")
        size = image_size(path)
        rng = item_rng(spec, image)
        lang = rng.choice(spec.languages)
        classes = self._classes_of(spec)
        qas = classification_qas(spec.modality, label, classes, rng, lang)
        return to_records(spec, self.dim, self.kind, image, size, qas, lang)

    def _classes_of(self, spec: SourceSpec) -> list[str]:
        # Cached per source within a worker process: listing is the costly part.
        cache = self.__dict__.setdefault("_class_cache", {})
        if spec.name not in cache:
            cache[spec.name] = self.classes(self.items(spec))
        return cache[spec.name]
