"""DICOM Part 10 bytes -> display-ready 8-bit RGB frames, with the window that was used.

    read_dataset     parse (pydicom), refuse non-DICOM, truncation and declared
                     lengths past the end of the data (nothing is read past it)
    check_image      refuse objects without a displayable frame (SR, waveforms,
                     SEG, ...), pixel counts over the limit, bad frame numbers
    decode_frame     one frame's stored values (pylibjpeg decoders for
                     JPEG / JPEG-LS / JPEG 2000 / RLE; YBR becomes RGB here)
    render_frame     modality LUT (rescale or table), then a window chosen as
                     request preset or center/width > the file's first window >
                     0.5..99.5 percentiles; 8-bit; MONOCHROME1 inverted;
                     PALETTE COLOR through its LUT; colour scaled to 8 bits

`dicom_to_rgb` runs all four: the public entry point, shared with the training
data converter so both render DICOM the same way. Frame numbers are 1-based,
as in DICOM (WADO-RS `/frames/1` is the first); the default is the middle frame.
Error messages name no header value: headers hold PHI.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.pixels.processing import apply_modality_lut

from service import errors
from service.config import ImageLimits
from service.media.windowing import (
    MAX_WINDOW_VALUE,
    PRESETS,
    Window,
    WindowSource,
    apply_window,
    percentile_window,
    to_rgb,
)

# pydicom's warnings quote element values (names, dates): never let them reach a log.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")

_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Objects that carry no picture for a model, even when they hold a pixel-like array.
_NON_IMAGE_SOP_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform",
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "an RT plan",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
}


@dataclass(frozen=True)
class DicomOptions:
    """What the client asked for: a window (preset name or explicit) and frames (1-based)."""

    window: str | Window | None = None
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class WindowUsed:
    center: float
    width: float
    function: str
    source: WindowSource
    preset: str | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "center": round(self.center, 3),
            "width": round(self.width, 3),
            "function": self.function,
            "source": self.source,
        }
        if self.preset is not None:
            out["preset"] = self.preset
        return out


@dataclass(frozen=True)
class RenderedFrame:
    number: int  # 1-based
    pixels: np.ndarray  # uint8: (rows, columns) for greyscale, (rows, columns, 3) for colour
    window: WindowUsed | None  # None for colour images: no window applies

    @cached_property
    def rgb(self) -> np.ndarray:
        """(rows, columns, 3) uint8. Greyscale stays one channel until asked: resizing
        one channel costs a third of three."""
        return to_rgb(self.pixels) if self.pixels.ndim == 2 else self.pixels


@dataclass(frozen=True)
class RenderedDicom:
    frames: list[RenderedFrame]
    frame_count: int
    photometric: str
    sop_instance_uid: str | None = field(default=None, repr=False)  # PHI-adjacent: hash it


def dicom_to_rgb(
    data: bytes, options: DicomOptions, limits: ImageLimits, param: str = "image"
) -> RenderedDicom:
    """Decode a DICOM Part 10 file into display-ready RGB frames (see the module docstring)."""
    try:
        return _dicom_to_rgb(data, options, limits, param)
    except errors.ServiceError:
        raise
    except Exception as exc:
        # The file is untrusted: pydicom converts elements lazily and may fail anywhere
        # (unknown VRs, missing required elements, odd lengths). Any such failure is the
        # file's, so it is a 422 here, never a 500 further up.
        raise errors.UnprocessableImage(
            "DICOM data is corrupt or inconsistent.", param=param
        ) from exc


def _dicom_to_rgb(
    data: bytes, options: DicomOptions, limits: ImageLimits, param: str
) -> RenderedDicom:
    ds = read_dataset(data, param)
    indices = check_image(ds, options, limits, param)
    frames = [
        RenderedFrame(i + 1, *render_frame(ds, decode_frame(ds, i, param), options, i, param))
        for i in indices
    ]
    uid = ds.get("SOPInstanceUID")
    return RenderedDicom(
        frames=frames,
        frame_count=frame_count(ds),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        sop_instance_uid=str(uid) if uid else None,
    )


def read_dataset(data: bytes, param: str) -> Dataset:
    """Parse a Part 10 file held in memory; refuse anything a valid file would not be."""
    try:
        ds = dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise errors.UnprocessableImage(
            "Image is not a DICOM Part 10 file (no DICM preamble).", param=param
        ) from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise errors.UnprocessableImage("DICOM data is truncated or corrupt.", param=param) from exc
    # pydicom reads a value as the bytes left when its declared length runs past the
    # end; such a file is truncated, or lies (a 4 GB length in a small file).
    for elem in ds.elements():
        if (
            isinstance(elem, RawDataElement)
            and elem.length != _UNDEFINED_LENGTH
            and elem.value is not None
            and len(elem.value) < elem.length
        ):
            raise errors.UnprocessableImage(
                "DICOM data is truncated: an element declares more bytes than the file holds.",
                param=param,
            )
    return ds


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def check_image(ds: Dataset, options: DicomOptions, limits: ImageLimits, param: str) -> list[int]:
    """The 0-based frame indices to render, after refusing what cannot be shown."""
    sop_class = str(ds.get("SOPClassUID", ""))
    for prefix, kind in _NON_IMAGE_SOP_PREFIXES.items():
        if sop_class.startswith(prefix):
            raise errors.UnprocessableImage(
                f"The DICOM object is {kind}, not an image.",
                param=param,
                code="dicom_not_an_image",
            )
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        # No SOP class in the message: an unregistered UID is a header value.
        raise errors.UnprocessableImage(
            "The DICOM object has no pixel data to display.",
            param=param,
            code="dicom_not_an_image",
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise errors.UnprocessableImage(
            "The DICOM image has no valid Rows/Columns.", param=param
        ) from exc
    if rows <= 0 or columns <= 0 or rows * columns > limits.max_pixels:
        raise errors.ImageTooLarge(
            f"DICOM frame is {columns}x{rows} pixels; the limit is {limits.max_pixels} pixels.",
            param=param,
        )
    count = frame_count(ds)
    if not options.frames:
        return [count // 2]
    if len(options.frames) > limits.max_images_per_request:
        raise errors.InvalidRequest(
            f"{len(options.frames)} frames requested; the limit is "
            f"{limits.max_images_per_request} images per request.",
            param=f"{param}.image_url.dicom.frames",
            code="too_many_images",
        )
    for number in options.frames:
        if not 1 <= number <= count:
            raise errors.InvalidRequest(
                f"Frame {number} does not exist: the object has {count} frame(s), numbered from 1.",
                param=f"{param}.image_url.dicom.frames",
                code="invalid_frame",
            )
    return [number - 1 for number in options.frames]


def decode_frame(ds: Dataset, index: int, param: str) -> np.ndarray:
    """One frame's values as stored (colour as RGB). Only that frame is decompressed."""
    try:
        return pixel_array(ds, index=index)
    except NotImplementedError as exc:
        # Before RuntimeError, its parent: pydicom raises this for a syntax it has
        # no decoder for (MPEG, private ones).
        raise errors.UnprocessableImage(
            "DICOM pixel data uses a transfer syntax this server cannot decode.",
            param=param,
            code="unsupported_transfer_syntax",
        ) from exc
    except (
        ValueError,
        RuntimeError,
        EOFError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
    ) as exc:
        # A missing decoder or required element, truncated pixel data, corrupt frames.
        raise errors.UnprocessableImage(
            "DICOM pixel data could not be decoded.", param=param
        ) from exc


def render_frame(
    ds: Dataset, pixels: np.ndarray, options: DicomOptions, index: int = 0, param: str = "image"
) -> tuple[np.ndarray, WindowUsed | None]:
    """Stored values -> uint8 display pixels ((rows, columns) grey or (rows, columns, 3)
    colour), and the window used (None for colour)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _scale_to_8bit(rgb, bits), None
    if pixels.ndim == 3:  # RGB (YBR was converted while decoding)
        return _scale_to_8bit(pixels, int(ds.get("BitsStored") or 8)), None
    values = _modality_values(ds, pixels, index, param)
    used = _choose_window(ds, values, options, index)
    grey = apply_window(values, Window(used.center, used.width, used.function))  # type: ignore[arg-type]
    if photometric == "MONOCHROME1":  # low values are white in MONOCHROME1
        np.subtract(255, grey, out=grey)
    return grey, used


def _modality_values(ds: Dataset, pixels: np.ndarray, index: int, param: str) -> np.ndarray:
    """Modality LUT: a table when the file has one, else rescale slope/intercept (float32)."""
    if ds.get("ModalityLUTSequence"):
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    else:
        rescale = _frame_item(ds, index, "PixelValueTransformationSequence")
        slope = float(rescale.get("RescaleSlope", 1) or 1)
        intercept = float(rescale.get("RescaleIntercept", 0) or 0)
        values = pixels.astype(np.float32, copy=False)
        if slope != 1.0 or intercept != 0.0:
            with np.errstate(over="ignore", invalid="ignore"):
                values = values * np.float32(slope) + np.float32(intercept)
    # A NaN or infinite slope or intercept, or one that overflows float32 (1e38 x
    # 4095), leaves nothing a window can map: the file's fault, a 422.
    if not np.isfinite(values).all():
        raise errors.UnprocessableImage(
            "The DICOM modality LUT (rescale slope and intercept) gives values that "
            "are not finite numbers.",
            param=param,
            code="invalid_dicom_values",
        )
    return values


def _choose_window(
    ds: Dataset, values: np.ndarray, options: DicomOptions, index: int
) -> WindowUsed:
    requested = options.window
    if isinstance(requested, str):
        preset = PRESETS[requested]
        return WindowUsed(preset.center, preset.width, preset.function, "preset", requested)
    if isinstance(requested, Window):
        return WindowUsed(requested.center, requested.width, requested.function, "request")
    voi = _frame_item(ds, index, "FrameVOILUTSequence")
    center, width = _first(voi.get("WindowCenter")), _first(voi.get("WindowWidth"))
    # A NaN, infinite or float32-overflowing window in the file is no window: the
    # percentiles stand in, as for a file without one.
    if center is not None and width is not None and _usable_window(center, width):
        function = str(voi.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            function = "LINEAR"
        return WindowUsed(center, width, function, "file")
    robust = percentile_window(values)
    return WindowUsed(robust.center, robust.width, robust.function, "percentile")


def _usable_window(center: float, width: float) -> bool:
    return abs(center) <= MAX_WINDOW_VALUE and 1 <= width <= MAX_WINDOW_VALUE


def _frame_item(ds: Dataset, index: int, sequence: str) -> Dataset:
    """Where an attribute lives for frame `index`: per-frame functional group, shared
    group (enhanced multi-frame objects), else the top-level dataset."""
    for groups, item_index in (
        (ds.get("PerFrameFunctionalGroupsSequence"), index),
        (ds.get("SharedFunctionalGroupsSequence"), 0),
    ):
        if groups and item_index < len(groups):
            inner = groups[item_index].get(sequence)
            if inner:
                return inner[0]
    return ds


def _first(value: object) -> float | None:
    """The first value of a possibly multi-valued number (WindowCenter may list several)."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _scale_to_8bit(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8 or bits <= 8:
        return rgb.astype(np.uint8, copy=False)
    return (rgb >> (bits - 8)).astype(np.uint8)
