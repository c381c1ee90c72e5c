"""Synthetic PathVQA: pvqa/ pickles + JPEGs, and the textbook subset (QA_pairs_vb.json + zip)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .textures import STYLES, texture

_QUESTIONS = [
    ("Is this synthetic image stained with hematoxylin and eosin?", "yes"),
    ("Does this synthetic image show a chart?", "no"),
    ("What pattern does this synthetic texture show?", None),
]


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _qas(style: str) -> list[tuple[str, str]]:
    return [(q, a if a is not None else f"{style} texture") for q, a in _QUESTIONS]


def write(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """Write the synthetic pathvqa source in its native layout into `folder` (sizes from `sizes`, pixels from `rng`)."""
    pvqa = folder / "pvqa"
    for split, n in zip(("train", "val", "test"), sizes.pathvqa_images, strict=True):
        (pvqa / "images" / split).mkdir(parents=True, exist_ok=True)
        (pvqa / "qas" / split).mkdir(parents=True, exist_ok=True)
        items = []
        for i in range(n):
            style = STYLES[int(rng.integers(len(STYLES)))]
            image = f"{split}_{i:04d}"
            (pvqa / "images" / split / f"{image}.jpg").write_bytes(_jpeg(texture(style, 64, rng)))
            items += [{"image": image, "question": q, "answer": a} for q, a in _qas(style)]
        with open(pvqa / "qas" / split / f"{split}_qa.pkl", "wb") as f:
            pickle.dump(items, f, protocol=2)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    qa, ids = [], [f"img_{i}" for i in range(sizes.textbook_images - 2)] + ["Fig.1", "Fig.2"]
    with zipfile.ZipFile(data / "textbook_of_pathology_image.zip", "w") as archive:
        for image_id in ids:
            style = STYLES[int(rng.integers(len(STYLES)))]
            info = zipfile.ZipInfo(f"textbook_of_pathology_image/{image_id}.jpg", date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, _jpeg(texture(style, 64, rng)))
            qa += [{"Image_ID": image_id, "Questions": q, "Answers": a} for q, a in _qas(style)]
    (data / "QA_pairs_vb.json").write_text(json.dumps(qa, indent=1))
