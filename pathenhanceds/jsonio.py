"""Strict JSON reading for user-supplied annotation files.

Duplicate object keys are refused (they would silently overwrite records); so are files over
`max_json_bytes`, nesting deeper than `max_json_depth` and integers longer than
`max_json_int_digits` (see `pathenhanceds.limits`). Every failure is an `InputError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError
from .limits import Limits, clean_message, current, read_regular


def _no_duplicate_keys(path: Path):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise InputError(f"duplicate key {key!r}", file=path, record=key,
                                 fix="each record id must appear once; remove the repeated entry")
            seen[key] = value
        return seen

    return hook


def _int_parser(path: Path, max_digits: int):
    def parse(text: str) -> int:
        digits = len(text.lstrip("-"))
        if digits > max_digits:
            raise InputError(f"a JSON integer has {digits} digits, over the limit of {max_digits} "
                             "(max_json_int_digits)", file=path, fix="re-download the file; ids and labels are short")
        return int(text)

    return parse


def nesting_depth(value: Any) -> int:
    """Depth of nested lists/dicts (a scalar is 0), computed without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item if isinstance(child, list | dict))
    return deepest


def load_json(path: Path, data: bytes | None = None, limits: Limits | None = None) -> Any:
    """Parse a JSON file (or `data`, a piece of it such as a JSONL line) under the JSON limits."""
    limits = limits or current()
    if data is None:
        data = read_regular(path, max_bytes=limits.max_json_bytes, limit_name="max_json_bytes", error=InputError,
                            limits=limits, what="JSON file")
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys(path),
                           parse_int=_int_parser(path, limits.max_json_int_digits))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON ({clean_message(exc)})", file=path, fix="re-download the file") from None
    except RecursionError:
        raise InputError(f"JSON nests deeper than Python can parse (limit {limits.max_json_depth}, max_json_depth)",
                         file=path, fix="re-download the file; the original nests a few levels deep") from None
    except ValueError as exc:  # e.g. a float literal that Python cannot convert
        raise InputError(f"not valid JSON ({clean_message(exc)})", file=path, fix="re-download the file") from None
    depth = nesting_depth(value)
    if depth > limits.max_json_depth:
        raise InputError(f"JSON nests {depth} levels deep, over the limit of {limits.max_json_depth} (max_json_depth)",
                         file=path, fix="re-download the file; the original nests a few levels deep")
    return value
