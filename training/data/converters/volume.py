"""3D segmentation datasets: NIfTI volumes with same-named NIfTI label masks (nibabel).

From each volume, `slices_per_volume` axial slices (last array axis) are chosen
evenly among those whose mask has foreground, windowed to 8-bit, rotated to the
radiological display convention (array x to the right, y up) and written as
PNG under the build's `images/<source>/<volume>/zNNN.png`; the mask slice gets
the same rotation, so the facts describe the picture that is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.converters.base import BadSourceFile, SourceSpec, item_rng, to_records
from training.data.facts import mask_facts
from training.data.records import Record
from training.data.templates import structure_qas

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def volume_stem(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        data = np.asarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise BadSourceFile(f"not a readable NIfTI volume ({type(exc).__name__})") from exc
    if data.ndim != 3:
        raise BadSourceFile(f"expected a 3D volume, got {data.ndim} dimensions")
    return data


def window_to_uint8(slice_: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    values = slice_.astype(np.float32)
    low, high = window or (float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5)))
    scaled = (values - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def choose_slices(mask: np.ndarray, count: int) -> list[int]:
    """`count` indices spread evenly over the slices that contain foreground."""
    with_foreground = np.flatnonzero(mask.reshape(-1, mask.shape[2]).any(axis=0))
    if with_foreground.size == 0:
        return []
    picks = np.linspace(0, with_foreground.size - 1, min(count, with_foreground.size))
    return sorted({int(with_foreground[round(p)]) for p in picks})


def display(slice_: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(slice_))


class VolumeConverter:
    dim = "3d"
    kind = "seg"

    def items(self, spec: SourceSpec) -> list[str]:
        if not spec.labels:
            raise ValueError(f"source {spec.name}: a volume source needs `labels`")
        folder = spec.root / spec.images
        if not folder.is_dir():
            raise FileNotFoundError(f"no folder {folder}")
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES))

    def image_dir(self, spec: SourceSpec, out: Path) -> Path:
        return out / "images" / spec.name

    def convert(self, spec: SourceSpec, item: str, out: Path) -> list[Record]:
        from PIL import Image

        stem = volume_stem(item)
        masks = [spec.root / spec.masks / (stem + s) for s in NIFTI_SUFFIXES]
        mask_path = next((m for m in masks if m.is_file()), None)
        if mask_path is None:
            raise BadSourceFile("no mask volume for this volume")
        volume, mask = load_nifti(spec.root / spec.images / item), load_nifti(mask_path)
        if volume.shape != mask.shape:
            raise BadSourceFile(f"mask shape {mask.shape} differs from volume {volume.shape}")
        mask = mask.astype(np.int64)
        names = [spec.labels[k] for k in sorted(spec.labels)]
        rng = item_rng(spec, item)
        lang = rng.choice(spec.languages)
        folder = self.image_dir(spec, out) / stem
        folder.mkdir(parents=True, exist_ok=True)
        records: list[Record] = []
        for z in choose_slices(mask, spec.slices_per_volume):
            pixels = display(window_to_uint8(volume[:, :, z], spec.window))
            labels = display(mask[:, :, z])
            image = f"{stem}/z{z:03d}.png"
            Image.fromarray(pixels, mode="L").save(folder / f"z{z:03d}.png")
            facts = mask_facts(labels, spec.labels)
            qas = structure_qas(spec.modality, facts, names, rng, lang)
            size = (pixels.shape[1], pixels.shape[0])
            records += to_records(spec, self.dim, self.kind, image, size, qas, lang)
        return records
