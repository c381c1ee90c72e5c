"""Synthetic PathGen-1.6M: `PathGen-1.6M_sample.json` plus pyramidal aperio-like TIFF slides in gdc-client's layout.

    pathgen/PathGen-1.6M_sample.json          [{"wsi_id", "position": ["x", "y"], "caption"}, ...]
    pathgen/slides/<file_uuid>/<wsi_id>.svs   tiled, deflate, 3 levels, MPP and AppMag in the description
    pathgen/slides/<file_uuid>/<wsi_id>.svs.partial, pathgen/slides/logs/   what gdc-client leaves behind

One record names a slide that is not downloaded (skipped and counted by the build). Slides are smooth
generated textures (they compress to a few hundred KB); no real tissue.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

PATCH = 672  # PathGen's patch size: sample slides hold 2x2 of them
WIDTH, HEIGHT = 1536, 1408
_CAPTIONS = (
    "The synthetic tissue shows sheets of generated cells with {a} nuclei in a {b} stroma; no real tissue is "
    "present, this texture only exercises the caption pipeline.",
    "A generated patch with {a} nuclear clusters scattered through {b} background, written for software tests "
    "of whole-slide patch extraction.",
    "Synthetic histology-like texture: {a} blobs over a {b} field, with no diagnostic meaning.",
)
_WORDS_A = ("dense", "sparse", "irregular", "rounded", "elongated")
_WORDS_B = ("pale pink", "fibrous", "loose", "homogeneous", "streaked")


def _slide_pixels(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth blobs (bilinear upsampled noise) in H&E-like colours, plus a position ramp (unique patches).

    Computed on an 8x coarser grid and repeated: fast, and the flat 8x8 cells compress well.
    """
    h, w = -(-height // 8), -(-width // 8)
    coarse = rng.random((h // 4 + 2, w // 4 + 2)).astype(np.float32)
    ys, xs = np.linspace(0, coarse.shape[0] - 1.001, h), np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    field = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
             + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)
    mask = np.clip((field - 0.55) * 6, 0, 1)[..., None]
    pink, purple = np.array([232, 176, 204], np.float32), np.array([96, 40, 128], np.float32)
    small = pink * (1 - mask) + purple * mask
    small[..., 1] += (np.add.outer(np.arange(h), np.arange(w)) // 12 % 12).astype(np.float32)
    small = np.clip(small, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(small.repeat(8, axis=0).repeat(8, axis=1)[:height, :width])


def write_slide(path: Path, pixels: np.ndarray, mpp: float) -> None:
    """An aperio-like pyramidal tiled TIFF that OpenSlide reads exactly (deflate tiles, horizontal predictor)."""
    import tifffile

    height, width = pixels.shape[:2]
    description = (f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] (256x256) Deflate/RGB"
                   f"|AppMag = 40|MPP = {mpp:.4f}|Filename = synthetic")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        level = pixels
        for i in range(3):
            tif.write(level, tile=(256, 256), compression="zlib", predictor=True, photometric="rgb",
                      description=description if i == 0 else None, metadata=None, subfiletype=0 if i == 0 else 1)
            level = level[::2, ::2]


def write(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """Write a tiny PathGen tree: aperio-like slides in the gdc-client layout, their JSON, one absent slide."""
    n_slides = int(sizes.pathgen_slides)
    per_slide = int(sizes.pathgen_patches_per_slide)
    records = []
    slides = folder / "slides"
    for s in range(n_slides + 1):  # the last slide is referenced but never "downloaded"
        wsi_id = (f"TCGA-SY-{1000 + s:04d}-01Z-00-DX1."
                  f"{str(uuid.UUID(bytes=rng.bytes(16), version=4)).upper()}")
        if s < n_slides:
            file_uuid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
            write_slide(slides / file_uuid / f"{wsi_id}.svs", _slide_pixels(rng, WIDTH, HEIGHT),
                        mpp=float(rng.choice([0.2520, 0.2465, 0.4990])))
        for k in range(per_slide):
            x = int(rng.integers(0, WIDTH - PATCH + 1)) // 16 * 16
            y = int(rng.integers(0, HEIGHT - PATCH + 1)) // 16 * 16
            caption = _CAPTIONS[k % len(_CAPTIONS)].format(a=_WORDS_A[int(rng.integers(5))],
                                                           b=_WORDS_B[int(rng.integers(5))])
            records.append({"wsi_id": wsi_id, "position": [str(x), str(y)], "caption": caption})
    # What gdc-client leaves beside finished downloads: an unfinished .partial and its logs/.
    partial = slides / str(uuid.UUID(bytes=rng.bytes(16), version=4)) / f"{records[0]['wsi_id']}.svs.partial"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"II*\x00")
    (slides / "logs").mkdir(parents=True, exist_ok=True)
    (slides / "logs" / "gdc-client.log").write_text("synthetic download log\n")
    (folder / "PathGen-1.6M_sample.json").write_text(json.dumps(records, indent="\t"))
