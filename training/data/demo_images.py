"""Procedural medical-looking images: five modalities that look different, with or
without a round lesion whose mask is returned alongside.

Each painter draws a modality's typical look (CT: grey body disc on black; X-ray:
dark lungs, bright spine and ribs; fundus: orange disc with vessels; pathology:
pink stroma with purple nuclei; dermoscopy: skin tone with a naevus). A lesion
is a blob with the modality's lesion look (hyperdense nodule, opacity,
exudate, dense cell cluster, dark pigment), placed inside one quadrant.
"""

from __future__ import annotations

import numpy as np

MODALITIES = ("ct", "xray", "fundus", "histopathology", "dermoscopy")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y / size, x / size


def _disc(y: np.ndarray, x: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return ((y - cy) ** 2 + (x - cx) ** 2) <= r * r


def _noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    return rng.normal(0.0, scale, (size, size)).astype(np.float32)


def _gray(values: np.ndarray) -> np.ndarray:
    v = np.clip(values, 0.0, 1.0)
    return np.stack([v, v, v], axis=-1)


def paint_ct(rng, y, x, size):
    body = _disc(y, x, 0.5, 0.5, 0.44 + rng.uniform(-0.03, 0.03))
    inner = _disc(y, x, 0.5, 0.5, 0.36)
    img = np.where(body, 0.45, 0.02) + np.where(body & ~inner, 0.25, 0.0)
    return _gray(img + _noise(rng, size, 0.04) * body), (0.95, 0.95, 0.95)


def paint_xray(rng, y, x, size):
    img = 0.35 + 0.2 * y + _noise(rng, size, 0.03)
    lungs = (_disc(y * 0.8, x, 0.42, 0.3, 0.2) | _disc(y * 0.8, x, 0.42, 0.7, 0.2)) & (y < 0.9)
    img = np.where(lungs, 0.12, img)
    img += np.where(np.abs(x - 0.5) < 0.05, 0.35, 0.0)  # spine
    ribs = (np.sin(y * 40 + rng.uniform(0, 6)) > 0.85) & lungs
    img += np.where(ribs, 0.15, 0.0)
    return _gray(img), (0.9, 0.9, 0.9)


def paint_fundus(rng, y, x, size):
    eye = _disc(y, x, 0.5, 0.5, 0.47)
    base = np.stack([0.75 - 0.3 * np.hypot(y - 0.5, x - 0.5), 0.3 + 0 * y, 0.12 + 0 * y], -1)
    img = np.where(eye[..., None], base, 0.0)
    vessels = eye & (np.abs(np.sin((y - 0.5) * 9 + x * rng.uniform(2, 5))) < 0.08)
    img[vessels] = (0.45, 0.08, 0.05)
    disc_x = 0.3 if rng.random() < 0.5 else 0.7
    img[_disc(y, x, 0.5, disc_x, 0.07)] = (0.95, 0.85, 0.6)
    return img + _noise(rng, size, 0.02)[..., None] * eye[..., None], (1.0, 1.0, 0.35)


def paint_histopathology(rng, y, x, size):
    img = (
        np.stack([0.92 + 0 * y, 0.7 + 0 * y, 0.82 + 0 * y], -1) + _noise(rng, size, 0.04)[..., None]
    )
    for _ in range(int(size * size / 180)):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.012, 0.025)
        img[_disc(y, x, cy, cx, r)] = (0.45, 0.25, 0.6)
    return img, (0.15, 0.05, 0.3)


def paint_dermoscopy(rng, y, x, size):
    tone = rng.uniform(0.75, 0.9)
    img = np.stack([tone + 0 * y, tone * 0.72 + 0 * y, tone * 0.6 + 0 * y], -1)
    img += _noise(rng, size, 0.03)[..., None]
    vignette = np.hypot(y - 0.5, x - 0.5) > 0.55
    img[vignette] = 0.05
    return img, (0.2, 0.1, 0.05)


PAINTERS = {
    "ct": paint_ct,
    "xray": paint_xray,
    "fundus": paint_fundus,
    "histopathology": paint_histopathology,
    "dermoscopy": paint_dermoscopy,
}
# Quadrant centres (row, col) in unit coordinates; lesions stay inside their quadrant.
QUADRANT_CENTRES = {
    "upper left": (0.28, 0.28),
    "upper right": (0.28, 0.72),
    "lower left": (0.72, 0.28),
    "lower right": (0.72, 0.72),
}


def synth_image(
    modality: str, quadrant: str | None, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, uint8 mask with 1 = lesion) for one synthetic study."""
    y, x = _grid(size)
    img, lesion_colour = PAINTERS[modality](rng, y, x, size)
    mask = np.zeros((size, size), np.uint8)
    if quadrant is not None:
        cy, cx = QUADRANT_CENTRES[quadrant]
        cy, cx = cy + rng.uniform(-0.07, 0.07), cx + rng.uniform(-0.07, 0.07)
        radius = rng.uniform(0.08, 0.13)
        blob = _disc(y, x, cy, cx, radius)
        img[blob] = lesion_colour
        img += _noise(rng, size, 0.02)[..., None] * blob[..., None]
        mask[blob] = 1
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), mask
