"""argparse value types with clear messages: a bad option value is a usage error (exit 2) before any work.

The library checks the same ranges (notebooks call it directly); these make the CLI say which option
is wrong in argparse's own format: `pathinsight data build: error: argument --num-proc: must be >= 1, got 0`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _number(text: str, kind: type, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= `low`."""

    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in some messages
    return parse


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""

    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def fraction(*, closed_low: bool = True) -> Callable[[str], float]:
    """A float in [0, 1) (or (0, 1) with `closed_low=False`); NaN and infinities are refused."""

    def parse(text: str) -> float:
        value = _number(text, float, "a number")
        ok = (0.0 <= value if closed_low else 0.0 < value) and value < 1.0  # False for NaN
        if not ok:
            raise argparse.ArgumentTypeError(f"must be in {'[' if closed_low else '('}0, 1), got {text}")
        return value

    parse.__name__ = "fraction"
    return parse


def source_arg(text: str) -> tuple[str, str]:
    """`NAME=PATH` with a non-empty name and path."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    if not name.strip():
        raise argparse.ArgumentTypeError(f"the source name is empty in {text!r}; expected NAME=PATH")
    if not path.strip():
        raise argparse.ArgumentTypeError(f"the path of source {name.strip()!r} is empty; expected NAME=PATH")
    return name.strip(), path


def selection_option(option: Any) -> Callable[[str], Any]:
    """The type of a selection option (`pathenhanceds.selection.OPTIONS`): converted, then range-checked."""
    from pathenhanceds.errors import InputError

    kind = type(option.default)

    def parse(text: str) -> Any:
        value = text if kind is str else _number(text, kind, "an integer" if kind is int else "a number")
        try:
            return option.validate(value)
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None

    parse.__name__ = kind.__name__
    return parse
