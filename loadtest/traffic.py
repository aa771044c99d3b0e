"""Request bodies for the load tests: image sets and the chat requests built from them.

An image set is a directory of PNG/JPEG/WebP and DICOM (`.dcm`) files, given by
`GMAIVL_LOADTEST_IMAGES`; without it, a built-in set: pydicom's own test files
(CT and MR) and two generated PNGs (a greyscale radiograph-sized image, a small
colour one). Every image is sent inline as a `data:` URL, as a PACS viewer does.
"""

from __future__ import annotations

import base64
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".dcm": "application/dicom",
}
BUILTIN_DICOM = ("CT_small.dcm", "MR_small.dcm")
QUESTIONS = (
    "What imaging modality is this?",
    "Describe the main findings.",
    "Is there any abnormality? Answer briefly.",
    "Which organ is shown?",
)


@dataclass(frozen=True)
class TestImage:
    name: str
    data_url: str

    @property
    def is_dicom(self) -> bool:
        return self.data_url.startswith("data:application/dicom")


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def builtin_images() -> list[TestImage]:
    from pydicom.data import get_testdata_file

    images = [
        TestImage(name, data_url(Path(get_testdata_file(name)).read_bytes(), "application/dicom"))
        for name in BUILTIN_DICOM
    ]
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 1024, dtype=np.float32)
    radiograph = (np.outer(ramp, ramp[::-1]) / 255 + rng.normal(0, 8, (1024, 1024))).clip(0, 255)
    images.append(
        TestImage("radiograph.png", data_url(png_bytes(radiograph.astype(np.uint8)), "image/png"))
    )
    colour = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    images.append(TestImage("colour.png", data_url(png_bytes(colour), "image/png")))
    return images


def load_images(directory: str | None = None) -> list[TestImage]:
    """The image set in `directory` (or $GMAIVL_LOADTEST_IMAGES), else the built-in one."""
    directory = directory or os.environ.get("GMAIVL_LOADTEST_IMAGES")
    if not directory:
        return builtin_images()
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in MEDIA_TYPES)
    if not files:
        raise ValueError(f"no images ({', '.join(MEDIA_TYPES)}) in {directory}")
    return [
        TestImage(p.name, data_url(p.read_bytes(), MEDIA_TYPES[p.suffix.lower()])) for p in files
    ]


def chat_body(
    model: str,
    image: TestImage,
    *,
    max_tokens: int,
    stream: bool = False,
    rng: random.Random | None = None,
) -> dict:
    question = (rng or random).choice(QUESTIONS)
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image.data_url}},
                    {"type": "text", "text": question},
                ],
            }
        ],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body
