"""The `xl` selection: PathEnhanceDS (every planner of `default`, PathGen-1.6M included) plus the other
public instruction sets (PathGen-Instruct, Quilt-Instruct, PathInstruct, PMC-VQA pathology part).

Imported last by `selection/__init__.py`, so it takes the `default` planner of every source registered
by then; sizes are the per-source options (`--pathgen-max-records`, `--quilt-instruct-max-records`, ...).
"""

from __future__ import annotations

from .base import SELECTIONS, describe_selection, planner

XL_SOURCES = ("pathgen", "pathgen_instruct", "quilt_instruct", "pathinstruct", "pmc_vqa")

for _source, _fn in sorted(SELECTIONS.get("default").items()):
    planner("xl", _source)(_fn)

describe_selection(
    "xl",
    "PathEnhanceDS (the default planners) plus PathGen-1.6M, PathGen-Instruct, Quilt-Instruct, PathInstruct and "
    "the pathology part of PMC-VQA; held-out images of every source are removed from train.",
)
