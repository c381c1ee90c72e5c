"""Synthetic CRC: CRC-VAL-HE-7K and NCT-CRC-HE-100K class folders of RGB TIFFs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..labels import CRC_CLASSES
from .textures import texture

SIZE = 64  # real patches are 224 px; small keeps the sample light


def write(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """Write the synthetic crc source in its native layout into `folder` (sizes from `sizes`, pixels from `rng`)."""
    for subset, per_class, prefix in (("CRC-VAL-HE-7K", sizes.crc_val_per_class, "TCGA-"),
                                      ("NCT-CRC-HE-100K", sizes.crc_train_per_class, "")):
        for code in CRC_CLASSES:
            class_dir = folder / subset / code
            class_dir.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                name = f"{code}-{prefix}SYN{int(rng.integers(16**8)):08X}{i:02d}.tif"
                Image.fromarray(texture(code, SIZE, rng), "RGB").save(class_dir / name, format="TIFF")
