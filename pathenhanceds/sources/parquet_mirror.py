"""Reading images out of Hub parquet mirrors (`image` struct column) one row at a time, cheaply.

Rows are requested in file order, so one decoded row group is cached per process. Two layouts of a
mirror are read: the repository's own files (`data/<split>-00000-of-00001.parquet`, the split in the
file name) and the Hub's auto-converted copy (`<config>/<split>/0000.parquet`, branch
`refs/convert/parquet`; `partial-<split>/` when the Hub converted only part of a large split).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..errors import InputError, RecordError
from ..images import ImagePayload, payload_from_bytes
from ..limits import Limits, check_regular, clean_message, current


def mirror_split(path: Path, splits: Sequence[str]) -> str | None:
    """The split a mirror file holds: from its name (`train-00000-of-00002.parquet`), or from its folder
    in the Hub's auto-converted layout (`default/train/0000.parquet`, `default/partial-train/0000.parquet`);
    None if neither names one of `splits`. Longer split names are tried first (`validation` before `val`)."""
    ordered = sorted(splits, key=len, reverse=True)
    for split in ordered:
        if re.match(rf"{re.escape(split)}[-_.]", path.name):
            return split
    folder = path.parent.name.removeprefix("partial-")
    return folder if folder in splits else None


def check_one_layout(paths: Sequence[Path], splits: Sequence[str], *, source: str) -> None:
    """Refuse a folder holding both mirror layouts (its rows would be read twice)."""
    ordered = sorted(splits, key=len, reverse=True)
    named = [p for p in paths if any(re.match(rf"{re.escape(s)}[-_.]", p.name) for s in ordered)]
    by_folder = [p for p in paths if p not in named and mirror_split(p, splits) is not None]
    if named and by_folder:
        raise InputError(
            f"{source}: two copies of the parquet mirror (split in the file name, e.g. {named[0].name}, and "
            f"the Hub's auto-converted <config>/<split>/NNNN.parquet, e.g. {by_folder[0]})",
            file=by_folder[0].parent.parent, fix="keep one copy (remove the other folder)",
        )


def read_columns(path: Path, columns: list[str]) -> dict[str, list[Any]]:
    """Read the non-image columns of a mirror file."""
    check_regular(path, error=InputError, what="parquet file")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"not a readable parquet file ({clean_message(exc)})", file=path,
                         fix="re-download the file") from None
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputError(
            f"parquet mirror lacks column(s) {missing}; has {schema.names}",
            file=path,
            fix="pass the Hub mirror's parquet files unchanged",
        )
    try:
        return pq.read_table(path, columns=columns).to_pydict()
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise InputError(f"not a readable parquet file ({clean_message(exc)})", file=path,
                         fix="re-download the file") from None


class RowGroupReader:
    """Fetch `image` bytes of row i of a parquet file, keeping the last row group decoded."""

    def __init__(self, column: str = "image", limits: Limits | None = None):
        self.column = column
        self.limits = limits
        self._cache: tuple[int, str, int, list[Any]] | None = None
        self._offsets: dict[str, list[int]] = {}

    def _row_groups(self, path: str) -> list[int]:
        if path not in self._offsets:
            meta = pq.ParquetFile(path).metadata
            starts, total = [], 0
            for i in range(meta.num_row_groups):
                starts.append(total)
                total += meta.row_group(i).num_rows
            starts.append(total)
            self._offsets[path] = starts
        return self._offsets[path]

    def image(self, path: str, row: int, where: str, limits: Limits | None = None) -> ImagePayload:
        """The image of row `row` (a `RecordError` for a missing, oversized or corrupt one)."""
        limits = limits or self.limits or current()
        fix = "re-download the file, or pass --on-error skip"
        try:
            starts = self._row_groups(path)
            group = next((i for i in range(len(starts) - 1) if starts[i] <= row < starts[i + 1]), None)
            if group is None:
                raise RecordError(f"row {row} is not in the file", file=path, record=where, fix=fix)
            key = (os.getpid(), path, group)
            if self._cache is None or self._cache[:3] != key:
                self._cache = None
                parquet = pq.ParquetFile(path)
                size = parquet.metadata.row_group(group).total_byte_size
                if size > limits.max_parquet_row_group_bytes:
                    raise RecordError(f"row group {group} holds {size} bytes, over the limit of "
                                      f"{limits.max_parquet_row_group_bytes} (max_parquet_row_group_bytes)",
                                      file=path, record=where, fix="check the file; raise the limit if it is genuine")
                table = parquet.read_row_group(group, columns=[self.column])
                self._cache = (*key, table.column(self.column).to_pylist())
        except RecordError:
            raise
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise RecordError(f"cannot read the parquet row ({clean_message(exc)})", file=path, record=where,
                              fix=fix) from None
        value = self._cache[3][row - starts[group]]
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise RecordError("row has no embedded image bytes", file=path, record=where,
                              fix="use a mirror with embedded images")
        if not isinstance(data, bytes):
            raise RecordError(f"the image cell holds a {type(data).__name__}, not bytes", file=path, record=where,
                              fix="pass the mirror's files unchanged")
        if len(data) > limits.max_image_bytes:
            raise RecordError(f"embedded image has {len(data)} bytes, over the limit of {limits.max_image_bytes} "
                              "(max_image_bytes)", file=path, record=where, fix="check the file")
        return payload_from_bytes(data, where=where, file=path)

    def __getstate__(self) -> dict[str, Any]:
        return {"column": self.column, "limits": self.limits, "_cache": None, "_offsets": {}}
