"""A folder of DICOM files, labelled by their own tags (Modality, BodyPartExamined).

Each file is rendered through the service's own DICOM path
(`service.media.dicom.dicom_to_rgb`: modality LUT, the file's window or a
robust percentile range, MONOCHROME1 inverted, colour handled, the middle frame
of a multi-frame object), so the model is trained on the pixels it will be
served. The rendered frame is written as PNG under the build's
`images/<source>/`; the questions come from the tags only. Non-image objects
(SR, waveforms, ...) and broken files are reported as bad files, with the
service's reason code and never a header value: DICOM headers carry PHI.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from training.data.converters.base import BadSourceFile, SourceSpec, item_rng, to_records
from training.data.records import Record
from training.data.templates import study_qas

# DICOM Modality codes -> the modality names of the template bank.
MODALITY_CODES = {
    "CT": "ct",
    "MR": "mri",
    "CR": "xray",
    "DX": "xray",
    "DR": "xray",
    "RG": "xray",
    "US": "ultrasound",
    "PT": "pet",
    "ES": "endoscopy",
    "SM": "histopathology",
    "GM": "histopathology",
}


class DicomFolderConverter:
    dim = "2d"
    kind = "dicom"

    def items(self, spec: SourceSpec) -> list[str]:
        """Every regular file under the source root (DICOM files often have no suffix)."""
        if not spec.root.is_dir():
            raise FileNotFoundError(f"no folder {spec.root}")
        return sorted(
            path.relative_to(spec.root).as_posix()
            for path in spec.root.rglob("*")
            if path.is_file() and not path.name.startswith(".") and path.name != "DICOMDIR"
        )

    def image_dir(self, spec: SourceSpec, out: Path) -> Path:
        return out / "images" / spec.name

    def convert(self, spec: SourceSpec, item: str, out: Path) -> list[Record]:
        from PIL import Image

        from service import errors
        from service.config import ImageLimits
        from service.media.dicom import DicomOptions, dicom_to_rgb

        data = (spec.root / item).read_bytes()
        try:
            rendered = dicom_to_rgb(data, DicomOptions(), ImageLimits(), param="image")
        except errors.ServiceError as exc:
            raise BadSourceFile(f"not a displayable DICOM image ({exc.code})") from exc
        modality, body_part = study_tags(data)
        pixels = rendered.frames[0].rgb
        image = f"{item}.png"
        target = self.image_dir(spec, out) / image
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target)
        rng = item_rng(spec, item)
        lang = rng.choice(spec.languages)
        qas = study_qas(modality, body_part, rng, lang)
        size = (pixels.shape[1], pixels.shape[0])
        spec = replace(spec, modality=modality)  # records carry each file's own modality
        return to_records(spec, self.dim, self.kind, image, size, qas, lang)


def study_tags(data: bytes) -> tuple[str, str | None]:
    """(modality name, body part in lower case or None) from the file's header."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    code = str(ds.get("Modality", "")).strip().upper()
    if not code:
        raise BadSourceFile("no Modality tag")
    body_part = str(ds.get("BodyPartExamined", "")).strip().lower() or None
    return MODALITY_CODES.get(code, code.lower()), body_part
