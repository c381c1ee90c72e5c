"""Inputs shared by the training tests: random textures, built-dataset folders and cached tiny models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasets import Dataset
from PIL import Image

from pathenhanceds.schema import FEATURES
from pathinsight_models.tiny import save_tiny_model


def texture(seed: int, size: int = 32) -> Image.Image:
    """A seeded random RGB image of `size` x `size` pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))


def write_built_dataset(root: Path, splits: dict[str, list[dict]]) -> Path:
    """A PathEnhanceDS-layout folder: config `all` (the default) with one parquet shard per split."""
    data = root / "data" / "all"
    data.mkdir(parents=True)
    for split, rows in splits.items():
        Dataset.from_list(rows, features=FEATURES).to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    files = "".join(f"  - split: {split}\n    path: data/all/{split}-*.parquet\n" for split in splits)
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: all\n  default: true\n  data_files:\n{files}---\n")
    return root


def tiny_model_cache(root: Path) -> Callable[[str], Path]:
    """family -> the folder of a tiny random model of it (seed 0), saved under `root` on first use."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = save_tiny_model(family, root / family, seed=0)
        return cache[family]

    return get
