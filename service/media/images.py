"""Decode and normalize raster images (PNG, JPEG, WebP), refusing hostile ones early;
split `data:` URLs (DICOM ones included; `dicom.py` decodes those).

Order of checks, cheapest first, so a hostile input costs almost nothing:
1. the URL scheme and media type (400);
2. the encoded size, from the base64 length, before decoding (413);
3. strict base64 (400);
4. the header only: format must match what was declared, and width x height
   must be under the pixel limit before any pixel is decoded (413) — this is
   what stops decompression bombs such as a 65k x 65k PNG of a few KB;
5. full decode; truncated or corrupt data is a 422;
6. normalize: 8-bit RGB (16-bit greyscale is min-max scaled, alpha dropped),
   long side capped.
Everything here is CPU work: callers run it in a thread, off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image

from service import errors
from service.config import ImageLimits
from service.core.generation import ImageInput

# MIME type declared in the data URL -> the PIL format it must decode as.
RASTER_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP"}
DICOM_TYPE = "application/dicom"
ACCEPTED_TYPES = frozenset({*RASTER_TYPES, DICOM_TYPE})


def parse_data_url(url: str, limits: ImageLimits, param: str) -> tuple[str, bytes]:
    """Split a `data:<mime>;base64,<payload>` URL into (mime, bytes)."""
    if not url.startswith("data:"):
        raise errors.InvalidRequest(
            "Unsupported image URL scheme: send the image inline as a "
            "data: URL (data:image/png;base64,...).",
            param=param,
            code="invalid_image_url",
        )
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise errors.InvalidRequest(
            "Image data URLs must be base64-encoded: data:<type>;base64,<data>.",
            param=param,
            code="invalid_image_url",
        )
    mime = header[len("data:") : -len(";base64")].strip().lower()
    if mime not in ACCEPTED_TYPES:
        raise errors.InvalidRequest(
            # The declared type is not quoted: it is the client's text.
            "Unsupported image type in the data: URL; supported: "
            + ", ".join(sorted(ACCEPTED_TYPES - {"image/jpg"}))
            + ".",
            param=param,
            code="unsupported_image_type",
        )
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise errors.ImageTooLarge(
            f"Image is larger than the limit of {limits.max_bytes} bytes.", param=param
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.InvalidRequest(
            "Image data is not valid base64.", param=param, code="invalid_base64"
        ) from exc
    if not data:
        raise errors.InvalidRequest("Image data is empty.", param=param, code="invalid_image")
    return mime, data


def decode_image(mime: str, data: bytes, limits: ImageLimits, param: str) -> ImageInput:
    """Decode `data` (declared as `mime`) into a normalized `ImageInput`."""
    expected = RASTER_TYPES[mime]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[expected])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise errors.ImageTooLarge(
            f"Image has more pixels than the limit of {limits.max_pixels}.", param=param
        ) from exc
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise errors.UnprocessableImage(f"Image could not be read as {mime}.", param=param) from exc
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > limits.max_pixels:
        raise errors.ImageTooLarge(
            f"Image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels.",
            param=param,
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise errors.UnprocessableImage("Image data is truncated or corrupt.", param=param) from exc
    return fit(to_rgb8(image), limits.max_side)


def fit(rgb: Image.Image, max_side: int) -> ImageInput:
    """An RGB image with its long side capped at `max_side` (aspect kept), as engines take it."""
    rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return ImageInput(width=rgb.width, height=rgb.height, rgb=rgb.tobytes())


def fit_array(pixels: np.ndarray, max_side: int) -> ImageInput:
    """`fit` for uint8 pixels, (rows, columns) grey or (rows, columns, 3) RGB. Grey is
    resized before it becomes RGB (a third of the work); no resize when it fits."""
    rows, columns = pixels.shape[:2]
    if max(rows, columns) > max_side:
        image = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        pixels = np.asarray(image)
        rows, columns = pixels.shape[:2]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return ImageInput(width=columns, height=rows, rgb=np.ascontiguousarray(pixels).tobytes())


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB; wide greyscale (16-bit PNGs of X-rays, say) is min-max scaled, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        grey = ((pixels - low) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def png_data_url(image: ImageInput, max_side: int | None = None) -> tuple[str, int, int]:
    """An image's RGB pixels as a lossless PNG `data:` URL (shrunk to `max_side` only
    when asked), with the width and height it has. The pixels an engine received,
    for a viewer ("what the model saw") or a stored conversation."""
    pil = image.to_pil()
    if max_side is not None and max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    pil.save(buf, "PNG", compress_level=1)  # speed over size: it crosses loopback or a LAN
    data = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + data, pil.width, pil.height
