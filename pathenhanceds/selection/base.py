"""Selections: which records become which rows, with which prompts, in which split.

A selection (user-facing: `--recipe`) is a set of per-source planners registered under a name. Planners
are pure: they see cheap `SourceRecord`s and options and return `RowPlan`s; no pixels are read here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..registry import Registry
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
    """A selection option: its default fixes the type; `*_fraction` options lie in [0, 1), numbers are >= 0."""

    name: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    def validate(self, value: Any) -> Any:
        """`value` converted to this option's type, or an `InputError` that names the option."""
        from ..errors import InputError

        flag = f"--{self.name.replace('_', '-')}"
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise InputError(f"recipe option {self.name} must be {kind.__name__}, got {value!r}",
                             fix=f"pass {flag} with a value of type {kind.__name__} (default {self.default!r})")
        if kind in (int, float):
            if self.name.endswith("_fraction"):
                if not 0 <= value < 1:
                    raise InputError(f"recipe option {self.name} must be in [0, 1), got {value!r}",
                                     fix=f"pass {flag} with a share such as {self.default!r}")
            elif value < 0:
                raise InputError(f"recipe option {self.name} must be >= 0, got {value!r}",
                                 fix=f"pass {flag} with a count such as {self.default!r}")
        if self.choices is not None and value not in self.choices:
            raise InputError(f"recipe option {self.name} must be one of {', '.join(self.choices)}, got {value!r}",
                             fix=f"pass {flag} {'|'.join(self.choices)}")
        return value


OPTIONS: Registry[Option] = Registry("recipe option", fix="use one of: {names}")


def register_option(name: str, default: Any, help: str, *, choices: Sequence[str] | None = None) -> None:
    """Declare a selection option; the CLI exposes it as `--name-with-dashes`. A name is declared once."""
    if type(default) not in (int, float, str):
        raise ValueError(f"option {name!r}: default must be an int, float or str, got {default!r}")
    option = Option(name, default, help, None if choices is None else tuple(choices))
    option.validate(default)  # a bad default is a programming error caught at import
    if name in OPTIONS and OPTIONS.get(name) == option:
        return  # the same declaration again (module re-imported)
    OPTIONS.register(name, option)


def resolve_options(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every option's value: the defaults with `overrides` applied, each checked for type and range."""
    from ..errors import InputError

    options = {name: opt.default for name, opt in OPTIONS.items()}
    for key, value in (overrides or {}).items():
        if key not in OPTIONS:
            raise InputError(f"unknown recipe option {key!r}", fix=f"use one of: {', '.join(OPTIONS.names())}")
        options[key] = OPTIONS.get(key).validate(value)
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

# Selection name ("default", "paper", ...) -> {source name -> planner}. The user-facing flag is `--recipe`.
SELECTIONS: Registry[dict[str, Planner]] = Registry("recipe", fix="use one of: {names}")
SELECTION_DESCRIPTIONS: dict[str, str] = {}


def planner(selection: str, source: str) -> Callable[[Planner], Planner]:
    """Register the decorated function as the planner of `source` in the selection `selection`."""

    def decorate(fn: Planner) -> Planner:
        if selection not in SELECTIONS:
            SELECTIONS.register(selection, {})
        planners = SELECTIONS.get(selection)
        if planners.get(source, fn) is not fn:
            raise ValueError(f"selection {selection!r} has two planners for source {source!r}")
        planners[source] = fn
        return fn

    return decorate


def describe_selection(name: str, text: str) -> None:
    """Attach the one-line description shown in the card and manifest to a selection."""
    if SELECTION_DESCRIPTIONS.get(name, text) != text:
        raise ValueError(f"selection {name!r} described twice")
    SELECTION_DESCRIPTIONS[name] = text


def list_selections() -> list[str]:
    """Registered selection names (the values `--recipe` accepts), sorted."""
    return SELECTIONS.names()


def get_planner(selection: str, source: str) -> Planner:
    """The planner of `source` in `selection`; an `InputError` if either is unknown."""
    from ..errors import InputError

    planners = SELECTIONS.get(selection)
    try:
        return planners[source]
    except KeyError:
        raise InputError(
            f"recipe {selection!r} does not use source {source!r}",
            fix=f"this recipe reads: {', '.join(sorted(planners))}",
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


def keep_at_most(p: PlanInput, records: list[SourceRecord], option: str) -> list[SourceRecord]:
    """At most `options[option]` records (0: all): those with the smallest seeded hash of their id, in input order."""
    limit = int(p.options[option])
    if limit <= 0 or limit >= len(records):
        return records
    ranked = sorted(records, key=lambda r: (hash_fraction(f"{p.source.name}-keep/{r.record_id}", p.seed), r.record_id))
    keep = {r.record_id for r in ranked[:limit]}
    p.ctx.note(f"{p.source.name}: kept {limit} of {len(records)} records (--{option.replace('_', '-')}, seeded)")
    return [r for r in records if r.record_id in keep]


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
    """One item of `items`, drawn with `rng`."""
    return items[int(rng.integers(len(items)))]
