"""Recipes: which records become which rows, with which prompts, in which split.

A recipe is a set of per-source planners registered under a recipe name. Planners are pure:
they see cheap `SourceRecord`s and options and return `RowPlan`s; no pixels are read here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sources.base import BuildContext, Source, SourceRecord


@dataclass(frozen=True, slots=True)
class RowPlan:
    """One output row before its image is loaded."""

    id: str
    source: str
    task: str
    split: str
    record: SourceRecord
    turns: tuple[tuple[str, str], ...]
    label: str | None = None
    answer_type: str | None = None


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str


OPTIONS: dict[str, Option] = {}


def register_option(name: str, default: Any, help: str) -> None:
    """Declare a recipe option; the CLI exposes it as `--name-with-dashes`."""
    OPTIONS[name] = Option(name, default, help)


def resolve_options(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from ..errors import InputError

    options = {name: opt.default for name, opt in OPTIONS.items()}
    for key, value in (overrides or {}).items():
        if key not in OPTIONS:
            raise InputError(f"unknown recipe option {key!r}", fix=f"use one of: {', '.join(sorted(OPTIONS))}")
        options[key] = value
    return options


@dataclass
class PlanInput:
    """Everything a planner may look at."""

    source: Source
    records: list[SourceRecord]
    options: dict[str, Any]
    seed: int
    ctx: BuildContext
    other_sources: Sequence[str] = field(default_factory=tuple)
    scores: Any = None  # a `filters.ScoreTable` from `--scores`, or None

    def rng(self, *salt: str) -> np.random.Generator:
        """A generator that depends only on the seed and the salt, never on call order."""
        digest = hashlib.sha256("/".join((str(self.seed), self.source.name, *salt)).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))


Planner = Callable[[PlanInput], list[RowPlan]]

RECIPES: dict[str, dict[str, Planner]] = {}
RECIPE_DESCRIPTIONS: dict[str, str] = {}


def planner(recipe: str, source: str) -> Callable[[Planner], Planner]:
    def decorate(fn: Planner) -> Planner:
        RECIPES.setdefault(recipe, {})[source] = fn
        return fn

    return decorate


def describe_recipe(name: str, text: str) -> None:
    RECIPE_DESCRIPTIONS[name] = text


def get_planner(recipe: str, source: str) -> Planner:
    from ..errors import InputError

    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}", fix=f"use one of: {', '.join(sorted(RECIPES))}")
    try:
        return RECIPES[recipe][source]
    except KeyError:
        raise InputError(
            f"recipe {recipe!r} does not use source {source!r}",
            fix=f"this recipe reads: {', '.join(sorted(RECIPES[recipe]))}",
        ) from None


# ---- seeded selection helpers (pure) ----


def hash_fraction(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a key (group-wise splits)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def split_by_hash(key: str, seed: int, fractions: dict[str, float]) -> str:
    """Assign a key to a split by a seeded hash, so all rows of one group share a split."""
    x = hash_fraction(key, seed)
    total = 0.0
    for split, frac in fractions.items():
        total += frac
        if x < total:
            return split
    return list(fractions)[-1]


def proportional_counts(counts: dict[str, int], n: int) -> dict[str, int]:
    """Allocate n draws across classes proportionally (largest remainder), capped by availability."""
    total = sum(counts.values())
    if n >= total:
        return dict(counts)
    raw = {k: n * v / total for k, v in counts.items()}
    alloc = {k: min(int(r), counts[k]) for k, r in raw.items()}
    order = sorted(counts, key=lambda k: (-(raw[k] - int(raw[k])), k))
    i = 0
    while sum(alloc.values()) < n:
        k = order[i % len(order)]
        if alloc[k] < counts[k]:
            alloc[k] += 1
        i += 1
    return alloc


def stratified_split(
    records: list[SourceRecord],
    key: Callable[[SourceRecord], str],
    sizes: dict[str, int | None],
    rng: np.random.Generator,
) -> dict[str, list[SourceRecord]]:
    """Draw disjoint stratified subsets without replacement; None takes the rest.

    Returned lists keep the input order (so readers stream their files in order).
    """
    by_class: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_class.setdefault(key(rec), []).append(i)
    remaining = {k: list(rng.permutation(v)) for k, v in sorted(by_class.items())}
    out: dict[str, list[SourceRecord]] = {}
    for split, size in sizes.items():
        counts = {k: len(v) for k, v in remaining.items()}
        alloc = counts if size is None else proportional_counts(counts, size)
        chosen: list[int] = []
        for k, m in alloc.items():
            chosen += remaining[k][:m]
            remaining[k] = remaining[k][m:]
        out[split] = [records[i] for i in sorted(chosen)]
    return out


def choose(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]
