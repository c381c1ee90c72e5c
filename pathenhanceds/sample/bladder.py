"""Synthetic Pathologist-level bladder reports: Report/{train,test}_annotation.json + Images/*.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .textures import texture

_FEATURES = {
    0: ["No nuclear pleomorphism", "No nuclear crowding", "Polarity is preserved", "No mitosis",
        "Inconspicuous nucleoli", "normal"],
    1: ["Mild nuclear pleomorphism", "Mild nuclear crowding", "Polarity is mostly preserved", "Rare mitosis",
        "Inconspicuous nucleoli", "low grade"],
    2: ["Severe nuclear pleomorphism", "Severe nuclear crowding", "Polarity is lost", "Frequent mitosis",
        "Prominent nucleoli", "high grade"],
    3: ["Insufficient information", "Insufficient information", "Insufficient information",
        "Insufficient information", "Insufficient information", "insufficient information"],
}
_VARIANTS = ["", " in this synthetic image", " (synthetic)", " overall", " throughout"]


def _caption(label: int, k: int) -> str:
    f = _FEATURES[label]
    sentences = [f[0] + _VARIANTS[k], *f[1:5], f"Conclusion: {f[5]}"]
    return ". ".join(sentences) + "."


def write(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """Write the synthetic bladder source in its native layout into `folder` (sizes from `sizes`, pixels from `rng`)."""
    images = folder / "Report" / "Images"
    images.mkdir(parents=True, exist_ok=True)
    for subset, n in (("train", sizes.bladder_train), ("test", sizes.bladder_test)):
        annotations = {}
        for i in range(n):
            label = i % 4
            name = f"syn_{subset}_{i:04d}_sub{label}"
            Image.fromarray(texture(f"grade{label}", 64, rng), "RGB").save(images / f"{name}.png")
            annotations[name] = {"caption": [_caption(label, k) for k in range(5)], "label": label}
        (folder / "Report" / f"{subset}_annotation.json").write_text(json.dumps(annotations, indent=1))
