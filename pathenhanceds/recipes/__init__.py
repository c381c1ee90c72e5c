"""Recipes registered by name: `default` (leakage-free) and `paper` (the paper's rules, bugs fixed)."""

from .base import (
    OPTIONS,
    RECIPE_DESCRIPTIONS,
    RECIPES,
    PlanInput,
    RowPlan,
    describe_recipe,
    get_planner,
    planner,
    register_option,
    resolve_options,
)

from . import crc, llava_med, openpath, pathologist_level, pathvqa, pcam  # noqa: E402,F401  isort: skip

describe_recipe(
    "default",
    "Leakage-free: official or patient-disjoint splits, label-independent prompts, every image used once.",
)
describe_recipe(
    "paper",
    "The PathInsight paper's selection rules with its bugs fixed (labels aligned, CRC without replacement); "
    "all rows in train, including standard test sets.",
)

__all__ = ["OPTIONS", "RECIPES", "RECIPE_DESCRIPTIONS", "PlanInput", "RowPlan", "describe_recipe", "get_planner",
           "planner", "register_option", "resolve_options"]
