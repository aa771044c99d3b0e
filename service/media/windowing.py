"""Window math: modality values (HU for CT) to 8-bit display values. Pure numpy.

The service and the training data converter both render DICOM through these
functions, so a model sees at serving time exactly what it saw in training.

Formulas are DICOM PS3.3 C.11.2.1.2 (VOI LUT Function), scaled to 0..255:
- LINEAR (the default):  y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clipped;
- LINEAR_EXACT:          y = ((x - c) / w + 0.5) * 255, clipped;
- SIGMOID:               y = 255 / (1 + exp(-4 (x - c) / w)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
WindowSource = Literal["preset", "request", "file", "percentile"]


@dataclass(frozen=True)
class Window:
    """A display window in modality units (Hounsfield units for CT)."""

    center: float
    width: float
    function: VoiFunction = "LINEAR"


# Window centre/width beyond this are absurd for any modality, and near float32's
# limit the window math overflows: requests are refused past it, files' windows ignored.
MAX_WINDOW_VALUE = 1e9

# Common CT windows (center, width in HU), as radiology references list them.
PRESETS: dict[str, Window] = {
    "lung": Window(-600.0, 1500.0),
    "mediastinum": Window(50.0, 350.0),
    "abdomen": Window(40.0, 400.0),
    "liver": Window(30.0, 150.0),
    "bone": Window(400.0, 1800.0),
    "brain": Window(40.0, 80.0),
    "subdural": Window(75.0, 215.0),
    "stroke": Window(40.0, 40.0),
}

# The robust range used when neither the client nor the file names a window:
# outliers (metal, air outside the body, padding values) do not wash out the image.
PERCENTILE_LOW = 0.5
PERCENTILE_HIGH = 99.5
# Percentiles of a subsample: the same range within a grey level, a fraction of the cost.
_PERCENTILE_SAMPLE = 65_536


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values -> uint8 through `window` (see the module docstring)."""
    x = values.astype(np.float32, copy=False)
    c, w = np.float32(window.center), np.float32(window.width)
    if window.function == "SIGMOID":
        # exp overflows to inf far below the centre: 255 / inf is the 0 it should be.
        with np.errstate(over="ignore"):
            y = np.float32(255.0) / (np.float32(1.0) + np.exp(np.float32(-4.0) * (x - c) / w))
    elif window.function == "LINEAR_EXACT":
        y = ((x - c) / w + np.float32(0.5)) * np.float32(255.0)
    elif w <= 1:
        # DICOM: width 1 (its minimum) is a threshold at c - 0.5; the ramp has no width.
        return np.where(x > c - np.float32(0.5), 255, 0).astype(np.uint8)
    else:
        y = ((x - (c - np.float32(0.5))) / (w - np.float32(1.0)) + np.float32(0.5)) * np.float32(
            255.0
        )
    # Round half up, as a display LUT does; clip before the cast so nothing wraps.
    return np.clip(y + np.float32(0.5), 0, 255).astype(np.uint8)


def percentile_window(values: np.ndarray) -> Window:
    """A LINEAR_EXACT window spanning the 0.5th..99.5th percentiles of `values`."""
    flat = values.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE]
    low, high = np.percentile(flat, [PERCENTILE_LOW, PERCENTILE_HIGH])
    low, high = float(low), float(high)
    if high <= low:  # a flat image: any window shows it as one grey
        high = low + 1.0
    return Window(center=(low + high) / 2.0, width=high - low, function="LINEAR_EXACT")


def to_rgb(grey: np.ndarray) -> np.ndarray:
    """(h, w) uint8 -> (h, w, 3) uint8."""
    return np.repeat(grey[:, :, None], 3, axis=2)
