"""Synthetic, visually distinct textures per class (pure numpy, deterministic from the rng).

Each class has its own colour and pattern so that a tiny model can learn to tell them apart;
per-image jitter and noise make every image unique (no duplicate SHA-256 across splits).
"""

from __future__ import annotations

import numpy as np

# (RGB base colour, pattern, pattern parameter)
_CLASS_STYLE: dict[str, tuple[tuple[int, int, int], str, float]] = {
    "ADI": ((245, 235, 240), "cells", 10.0),
    "BACK": ((120, 135, 160), "flat", 0.0),  # distinct from ADI even when downsampled to 32 px
    "DEB": ((210, 120, 160), "speckle", 0.35),
    "LYM": ((70, 40, 140), "dots", 4.0),
    "MUC": ((180, 170, 220), "waves", 0.15),
    "MUS": ((220, 80, 120), "stripes", 0.0),
    "NORM": ((150, 60, 170), "rings", 12.0),
    "STR": ((230, 140, 180), "stripes", 0.8),
    "TUM": ((110, 30, 110), "blobs", 7.0),
    # PCam and bladder styles
    "tumour": ((90, 25, 120), "blobs", 6.0),
    "normal": ((235, 170, 200), "speckle", 0.1),
    "grade0": ((235, 175, 205), "cells", 12.0),
    "grade1": ((170, 90, 170), "dots", 6.0),
    "grade2": ((95, 25, 115), "blobs", 5.0),
    "grade3": ((200, 200, 200), "speckle", 0.5),
}
STYLES = tuple(_CLASS_STYLE)


def texture(style: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 uint8 image of the given style."""
    base, pattern, param = _CLASS_STYLE[style]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if pattern == "flat":
        mask = np.zeros((size, size), np.float32)
    elif pattern == "stripes":
        angle = param + rng.uniform(-0.1, 0.1)
        mask = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.9 + phase)
    elif pattern == "waves":
        mask = 0.5 + 0.5 * np.sin(xx * param * 2 + 3 * np.sin(yy * param + phase))
    elif pattern == "rings":
        cx, cy = rng.uniform(0, size, 2)
        mask = 0.5 + 0.5 * np.sin(np.hypot(xx - cx, yy - cy) * 2 * np.pi / param + phase)
    elif pattern == "speckle":
        mask = (rng.random((size, size)) < param).astype(np.float32)
    else:  # dots, blobs, cells: discs of a given radius scattered over the image
        mask = np.zeros((size, size), np.float32)
        radius = param * size / 64
        count = int(size * size / (radius * radius * (3 if pattern == "dots" else 6))) + 1
        for cx, cy in rng.uniform(0, size, (count, 2)):
            disc = np.hypot(xx - cx, yy - cy) < radius
            if pattern == "cells":
                ring = np.abs(np.hypot(xx - cx, yy - cy) - radius) < 1.0
                mask = np.maximum(mask, ring.astype(np.float32))
            else:
                mask = np.maximum(mask, disc.astype(np.float32))
    dark = np.array(base, np.float32) * 0.45
    image = np.array(base, np.float32) * (1 - mask[..., None]) + dark * mask[..., None]
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
