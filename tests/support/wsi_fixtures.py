"""Tiny pyramidal tiled TIFF slides (aperio-like) whose pixels encode slide and position, and PathGen JSON.

Level-0 pixel (x, y) of slide s is (x % 256, y % 256, (37 s + 7 (x // 256) + 13 (y // 256)) % 256), so a
patch proves through its pixels alone which slide it came from and where (`slide_pixels`). Tiles are
deflate-compressed with a horizontal predictor (OpenSlide decodes them exactly; a 2048x1536 slide is ~80 KB).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import tifffile


def slide_pixels(slide: int, x: int, y: int, width: int, height: int | None = None) -> np.ndarray:
    """The expected RGB level-0 pixels of `slide` in the window at (x, y) of width x height."""
    height = width if height is None else height
    xs, ys = np.arange(x, x + width), np.arange(y, y + height)
    out = np.empty((height, width, 3), np.uint8)
    out[..., 0] = (xs % 256)[None, :]
    out[..., 1] = (ys % 256)[:, None]
    out[..., 2] = ((37 * slide + 7 * (xs // 256))[None, :] + (13 * (ys // 256))[:, None]) % 256
    return out


def tcga_id(patient: int, slide: int = 1, tss: str = "ZZ") -> str:
    """A TCGA-style diagnostic-slide id: patient barcode (12 chars) + sample + DX slide + a fixed uuid."""
    barcode = f"TCGA-{tss}-{patient:04d}"
    return f"{barcode}-01Z-00-DX{slide}.{str(uuid.UUID(int=patient * 100 + slide)).upper()}"


def write_slide(path: Path, slide: int, width: int = 2048, height: int = 1536, *, tile: int = 256, levels: int = 3,
                mpp: float | None = 0.2520, app_mag: int = 40, compression: str = "zlib") -> Path:
    """An aperio-like pyramidal tiled TIFF (levels halve the size; Aperio description with MPP/AppMag)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = slide_pixels(slide, 0, 0, width, height)
    fields = [f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
              "Deflate/RGB", f"AppMag = {app_mag}", f"Filename = synthetic-{slide}"]
    if mpp is not None:
        fields.insert(1, f"MPP = {mpp:.4f}")
    with tifffile.TiffWriter(path) as tif:
        level = image
        for i in range(levels):
            tif.write(level, tile=(tile, tile), compression=compression, predictor=True, photometric="rgb",
                      description="|".join(fields) if i == 0 else None, metadata=None,
                      subfiletype=0 if i == 0 else 1)
            level = level[::2, ::2]
    return path


def gdc_path(root: Path, wsi_id: str, suffix: str = ".svs") -> Path:
    """Where gdc-client puts a slide: <root>/<file_uuid>/<wsi_id>.svs (a uuid derived from the id)."""
    return root / str(uuid.uuid5(uuid.NAMESPACE_URL, wsi_id)) / f"{wsi_id}{suffix}"


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut a slide file short (tifffile writes the IFDs last, so OpenSlide cannot open it)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def corrupt_first_tile(path: Path) -> Path:
    """Zero the first level-0 tile: the slide opens, but reading that tile fails (and poisons the handle)."""
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00" * count)
    return path


def pathgen_record(wsi_id: str, x: int, y: int, caption: str | None = None, key: str = "wsi_id") -> dict:
    """One PathGen record as distributed (positions as strings)."""
    return {key: wsi_id, "position": [str(x), str(y)],
            "caption": caption or f"Synthetic caption of {wsi_id} at {x},{y}."}


def write_pathgen_json(path: Path, records: list[dict]) -> Path:
    """The PathGen JSON (a list of records), tab-indented like the released sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent="\t"))
    return path
