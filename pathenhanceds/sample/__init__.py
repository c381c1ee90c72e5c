"""`pathinsight data sample`: a small synthetic raw-source tree in each source's native format.

Everything written is marked synthetic (a SYNTHETIC.md in every source folder, "synthetic" in the
text); the same seed writes the same bytes. Used by tests, the demo and users' CI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import bladder, crc, llava_med, openpath, pathvqa, pcam

MARKER = "SYNTHETIC.md"
_MARKER_TEXT = (
    "# Synthetic data\n\nWritten by `pathinsight data sample` (seed {seed}). Generated textures and text in this "
    "source's native file format, for tests and demos. No real patient data.\n"
)


@dataclass(frozen=True)
class SampleSizes:
    """Records per source/subset; `scale` multiplies them."""

    pcam_train: int = 96
    pcam_valid: int = 24
    pcam_test: int = 24
    crc_val_per_class: int = 12
    crc_train_per_class: int = 24
    bladder_train: int = 30
    bladder_test: int = 10
    pathvqa_images: tuple[int, int, int] = (8, 3, 4)
    textbook_images: int = 6
    llava_med_papers: int = 24
    openpath_tweets: int = 40


WRITERS = {"pcam": pcam.write, "crc": crc.write, "pathologist_level": bladder.write, "pathvqa": pathvqa.write,
           "llava_med": llava_med.write, "openpath": openpath.write}


def _rng(seed: int, name: str) -> np.random.Generator:
    # Independent stream per source: adding a source never changes another's bytes.
    return np.random.default_rng([seed, sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**32)])


def write_sample(output: str | os.PathLike[str], seed: int = 0, sizes: SampleSizes | None = None,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write OUTPUT/<source>/ for every source; returns {source: path} for `build(sources=...)`."""
    root = Path(output)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise InputError("sample output folder is not empty", file=root, fix="choose an empty folder or pass --overwrite")
    sizes = sizes or SampleSizes()
    paths: dict[str, Path] = {}
    for name, writer in WRITERS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text(_MARKER_TEXT.format(seed=seed))
        writer(folder, _rng(seed, name), sizes)
        paths[name] = folder
    return paths


def is_synthetic(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MARKER).exists()


__all__ = ["MARKER", "SampleSizes", "is_synthetic", "write_sample"]
