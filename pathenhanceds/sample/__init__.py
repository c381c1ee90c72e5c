"""`pathinsight data sample`: a small synthetic raw-source tree in each source's native format.

Everything written is marked synthetic (a SYNTHETIC.md in every source folder, "synthetic" in the
text); the same seed writes the same bytes. Used by tests, the demo and users' CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..layout import SYNTHETIC_MARKER as MARKER
from ..layout import is_synthetic
from . import bladder, crc, instruction_sets, llava_med, openpath, pathgen, pathvqa, pcam

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
    pathgen_slides: int = 3  # plus one referenced slide that is "not downloaded"
    pathgen_patches_per_slide: int = 4
    instruct_dialogues: int = 8  # each of pathgen_instruct, quilt_instruct, pathinstruct
    pmc_vqa_questions: int = 12


WRITERS = {"pcam": pcam.write, "crc": crc.write, "pathologist_level": bladder.write, "pathvqa": pathvqa.write,
           "llava_med": llava_med.write, "openpath": openpath.write, "pathgen": pathgen.write,
           "pathgen_instruct": instruction_sets.write_pathgen_instruct,
           "quilt_instruct": instruction_sets.write_quilt_instruct,
           "pathinstruct": instruction_sets.write_pathinstruct, "pmc_vqa": instruction_sets.write_pmc_vqa}


def _rng(seed: int, name: str) -> np.random.Generator:
    # Independent stream per source: adding a source never changes another's bytes.
    return np.random.default_rng([seed, sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**32)])


def sample_sources_of(which: str | Iterable[str]) -> list[str]:
    """Source names of a sample set: a selection name (the sources it reads, e.g. `default`,
    `xl`), `all`, or an explicit list of source names."""
    if isinstance(which, str):
        if which == "all":
            return list(WRITERS)
        from ..selection import SELECTIONS

        planned = SELECTIONS.get(which)
        return [name for name in WRITERS if name in planned]
    names = list(which)
    unknown = sorted(set(names) - set(WRITERS))
    if unknown:
        raise InputError(f"no sample writer for {', '.join(unknown)}", fix=f"use some of: {', '.join(WRITERS)}")
    return names


def write_sample(output: str | os.PathLike[str], seed: int = 0, sizes: SampleSizes | None = None,
                 overwrite: bool = False, sources: str | Iterable[str] = "default") -> dict[str, Path]:
    """Write OUTPUT/<source>/ for the sources of `sources` (by default those the `default` selection
    reads, so the result can go straight to `build(...)`; `"xl"` or `"all"` adds the other instruction
    sets); returns {source: path}."""
    root = Path(output)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise InputError("sample output folder is not empty", file=root, fix="choose an empty folder or pass --overwrite")
    sizes = sizes or SampleSizes()
    names = sample_sources_of(sources)
    paths: dict[str, Path] = {}
    for name, writer in WRITERS.items():
        if name not in names:
            continue
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text(_MARKER_TEXT.format(seed=seed))
        writer(folder, _rng(seed, name), sizes)
        paths[name] = folder
    return paths


__all__ = ["MARKER", "SampleSizes", "is_synthetic", "sample_sources_of", "write_sample"]
