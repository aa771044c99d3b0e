"""2D segmentation datasets: `images/<name>` with a label mask `masks/<name>` (PNG).

The mask's values are structure ids (`labels`: value -> name); a mask whose
stem matches the image's is accepted with any image suffix (x.jpg <-> x.png).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.converters.base import (
    BadSourceFile,
    SourceSpec,
    image_files,
    image_size,
    item_rng,
    to_records,
)
from training.data.facts import mask_facts
from training.data.records import Record
from training.data.templates import structure_qas


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mask = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadSourceFile(f"mask not readable ({type(exc).__name__})") from exc
    if mask.ndim == 3:  # an RGB(A)-saved label map: the values are in the first channel
        mask = mask[..., 0]
    if (mask.shape[1], mask.shape[0]) != size:
        raise BadSourceFile(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from the image's")
    return mask


class SegmentationConverter:
    dim = "2d"
    kind = "seg"

    def items(self, spec: SourceSpec) -> list[str]:
        if not spec.labels:
            raise ValueError(f"source {spec.name}: segmentation needs `labels`")
        return [p.relative_to(spec.root).as_posix() for p in image_files(spec.root / spec.images)]

    def image_dir(self, spec: SourceSpec, out: Path) -> Path:
        return spec.root

    def convert(self, spec: SourceSpec, item: str, out: Path) -> list[Record]:
        image = spec.root / item
        size = image_size(image)
        relative = Path(item).relative_to(spec.images)
        masks = sorted((spec.root / spec.masks / relative.parent).glob(relative.stem + ".*"))
        if not masks:
            raise BadSourceFile("no mask for this image")
        mask = read_mask(masks[0], size)
        rng = item_rng(spec, item)
        lang = rng.choice(spec.languages)
        facts = mask_facts(mask, spec.labels)
        names = [spec.labels[k] for k in sorted(spec.labels)]
        qas = structure_qas(spec.modality, facts, names, rng, lang)
        return to_records(spec, self.dim, self.kind, item, size, qas, lang)
