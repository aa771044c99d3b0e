"""What a source is (`SourceSpec`), what a converter does (`Converter`), shared helpers."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from training.data.records import Record, record_id
from training.data.templates import LANGS, QA

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class BadSourceFile(Exception):
    """One file of a source cannot be used; the message names the problem, never contents."""


@dataclass
class SourceSpec:
    """One annotated dataset, as written in a build config (YAML/JSON)."""

    name: str
    kind: str
    """classification | segmentation | volume | detection | dicom"""
    root: Path
    modality: str = ""
    """the sources' modality (a `dicom` source takes each file's own Modality tag)"""
    layout: str = "folder"
    """classification: `folder` (one folder per class) or `csv`"""
    csv: str = "labels.csv"
    image_column: str = "image"
    label_column: str = "label"
    images: str = "images"
    """segmentation: image folder; volume: volume folder (under root)"""
    masks: str = "masks"
    """segmentation: mask PNGs with the image's file name; volume: mask NIfTIs likewise"""
    labels: dict[int, str] = field(default_factory=dict)
    """segmentation/volume: mask value -> structure name (0 is background)"""
    annotations: str = "annotations.json"
    """detection: COCO JSON (under root); its images are under `images`"""
    slices_per_volume: int = 3
    window: tuple[float, float] | None = None
    """volume: intensity window (low, high) mapped to 0..255; None: 0.5-99.5 percentiles"""
    languages: list[str] = field(default_factory=lambda: ["en"])
    sample_ratio: float = 1.0
    """written to the mixture file: how often the trainer samples this source"""
    seed: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.labels = {int(k): str(v) for k, v in self.labels.items()}
        if self.window is not None:
            self.window = (float(self.window[0]), float(self.window[1]))
        unknown = set(self.languages) - set(LANGS)
        if unknown:
            raise ValueError(f"source {self.name}: unknown languages {sorted(unknown)}")


class Converter(Protocol):
    dim: str
    kind: str

    def items(self, spec: SourceSpec) -> list[Any]:
        """The units to convert (files, rows, volumes), in a stable order."""

    def image_dir(self, spec: SourceSpec, out: Path) -> Path:
        """The folder record `image` paths are relative to."""

    def convert(self, spec: SourceSpec, item: Any, out: Path) -> list[Record]:
        """Records for one item; raises BadSourceFile for an unusable one."""


def item_rng(spec: SourceSpec, key: str) -> random.Random:
    """A generator seeded by the source and the item, so rebuilds are identical."""
    digest = hashlib.sha256(f"{spec.seed}:{spec.name}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def to_records(
    spec: SourceSpec,
    dim: str,
    kind: str,
    image: str,
    size: tuple[int, int],
    qas: list[QA],
    lang: str,
) -> list[Record]:
    width, height = size
    return [
        Record(
            id=record_id(dim, kind, spec.modality, spec.name, image, f"{qa.question_type}{i}"),
            image=image,
            width=width,
            height=height,
            question=qa.question,
            answer=qa.answer,
            task=qa.task,
            question_type=qa.question_type,
            modality=spec.modality,
            source=spec.name,
            lang=lang,
        )
        for i, qa in enumerate(qas)
    ]


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, checking that it decodes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadSourceFile(f"not a readable image ({type(exc).__name__})") from exc
