"""Dataset selections registered by name: `default` (leakage-free) and `paper` (the paper's rules, bugs fixed).

A selection decides which source records become which rows, with which prompts, in which split.
Users pick one with `--recipe` / `build(recipe=...)`; the manifest records it under `recipe`.
"""

from .base import (
    OPTIONS,
    SELECTION_DESCRIPTIONS,
    SELECTIONS,
    PlanInput,
    RowPlan,
    describe_selection,
    get_planner,
    list_selections,
    planner,
    register_option,
    resolve_options,
)

from . import bladder, crc, llava_med, openpath, pathgen, pathvqa, pcam  # noqa: E402,F401  isort: skip
# xl last: it copies every default planner registered above.
from . import instruction_sets, xl  # noqa: E402,F401  isort: skip

describe_selection(
    "default",
    "Leakage-free: official or patient-disjoint splits, label-independent prompts, every image used once.",
)
describe_selection(
    "paper",
    "The PathInsight paper's selection rules with its bugs fixed (labels aligned, CRC without replacement); "
    "all rows in train, including standard test sets.",
)

__all__ = ["OPTIONS", "SELECTIONS", "SELECTION_DESCRIPTIONS", "PlanInput", "RowPlan", "describe_selection",
           "get_planner", "list_selections", "planner", "register_option", "resolve_options"]
