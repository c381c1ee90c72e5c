"""Synthetic PCam: x/y HDF5 (train gzipped, as often downloaded), meta CSV."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .textures import texture


def write(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """Write the synthetic pcam source in its native layout into `folder` (sizes from `sizes`, pixels from `rng`)."""
    for split, n in (("train", sizes.pcam_train), ("valid", sizes.pcam_valid), ("test", sizes.pcam_test)):
        labels = np.array([i % 2 for i in range(n)], np.uint8)
        rng.shuffle(labels)
        x = np.stack([texture("tumour" if y else "normal", 96, rng) for y in labels])
        base = folder / f"camelyonpatch_level_2_split_{split}"
        with h5py.File(f"{base}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
        with h5py.File(f"{base}_y.h5", "w") as f:
            f.create_dataset("y", data=labels.reshape(n, 1, 1, 1))
        with open(f"{base}_meta.csv", "w") as f:
            f.write(",coord_y,coord_x,tumor_patch,center_tumor_patch,wsi\n")
            for i, y in enumerate(labels):
                f.write(f"{i},{i * 96},{i * 48},{bool(y)},{bool(y)},synthetic_{split}_{i // 8:03d}\n")
        if split == "train":  # PCam is distributed gzipped; exercise that path
            for kind in ("x", "y"):
                src = Path(f"{base}_{kind}.h5")
                with open(src, "rb") as fin, gzip.GzipFile(f"{src}.gz", "wb", mtime=0) as fout:
                    shutil.copyfileobj(fin, fout)
                src.unlink()
