"""Strict JSON reading for user-supplied annotation files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError


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


def load_json(path: Path, data: bytes | None = None) -> Any:
    """Parse JSON, rejecting duplicate object keys (they would silently overwrite records)."""
    try:
        text = (data if data is not None else path.read_bytes()).decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", file=path, fix="re-download the file") from exc
