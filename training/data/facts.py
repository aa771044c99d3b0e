"""Label geometry -> facts a sentence can state: presence, location, size, count.

Locations are image quadrants seen as displayed (row 0 at the top, column 0 at
the left): "upper left", "upper right", "lower left", "lower right". A
structure's locations are those of its connected components' centroids.
Sizes are named from the fraction of the image a structure covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

QUADRANTS = ("upper left", "upper right", "lower left", "lower right")
# Fraction of the image area below which a structure is called small / medium.
SMALL_FRACTION = 0.02
MEDIUM_FRACTION = 0.08


@dataclass(frozen=True)
class StructureFacts:
    name: str
    count: int
    locations: tuple[str, ...]
    """Distinct quadrants of the components, in QUADRANTS order."""
    fraction: float
    """Share of the image area covered, 0..1."""

    @property
    def size(self) -> str:
        if self.fraction < SMALL_FRACTION:
            return "small"
        return "medium" if self.fraction < MEDIUM_FRACTION else "large"


def quadrant(row: float, col: float, height: int, width: int) -> str:
    vertical = "upper" if row < height / 2 else "lower"
    horizontal = "left" if col < width / 2 else "right"
    return f"{vertical} {horizontal}"


def _ordered(locations: set[str]) -> tuple[str, ...]:
    return tuple(q for q in QUADRANTS if q in locations)


def mask_facts(mask: np.ndarray, labels: dict[int, str]) -> list[StructureFacts]:
    """Facts for every labelled structure present in a 2D mask (absent ones are omitted)."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    height, width = mask.shape
    facts = []
    for value, name in sorted(labels.items()):
        region = mask == value
        pixels = int(region.sum())
        if pixels == 0:
            continue
        components, count = ndimage.label(region)
        centroids = ndimage.center_of_mass(region, components, range(1, count + 1))
        locations = {quadrant(r, c, height, width) for r, c in centroids}
        facts.append(
            StructureFacts(name, count, _ordered(locations), pixels / float(height * width))
        )
    return facts


@dataclass(frozen=True)
class Box:
    """A COCO box: top-left corner, width, height, in pixels."""

    category: str
    x: float
    y: float
    w: float
    h: float


def box_facts(boxes: list[Box], width: int, height: int) -> list[StructureFacts]:
    """Facts per category: how many boxes, which quadrants their centres fall in, area share."""
    by_category: dict[str, list[Box]] = {}
    for box in boxes:
        by_category.setdefault(box.category, []).append(box)
    facts = []
    for name in sorted(by_category):
        group = by_category[name]
        locations = {quadrant(b.y + b.h / 2, b.x + b.w / 2, height, width) for b in group}
        area = sum(b.w * b.h for b in group) / float(width * height)
        facts.append(StructureFacts(name, len(group), _ordered(locations), min(area, 1.0)))
    return facts
