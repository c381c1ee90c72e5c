"""Reading images out of Hub parquet mirrors (`image` struct column) one row at a time, cheaply.

Rows are requested in file order, so one decoded row group is cached per process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..errors import InputError, RecordError
from ..images import ImagePayload, payload_from_bytes


def read_columns(path: Path, columns: list[str]) -> dict[str, list[Any]]:
    """Read the non-image columns of a mirror file."""
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"not a readable parquet file ({exc})", file=path, fix="re-download the file") from exc
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputError(
            f"parquet mirror lacks column(s) {missing}; has {schema.names}",
            file=path,
            fix="pass the Hub mirror's parquet files unchanged",
        )
    return pq.read_table(path, columns=columns).to_pydict()


class RowGroupReader:
    """Fetch `image` bytes of row i of a parquet file, keeping the last row group decoded."""

    def __init__(self, column: str = "image"):
        self.column = column
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

    def image(self, path: str, row: int, where: str) -> ImagePayload:
        starts = self._row_groups(path)
        group = next(i for i in range(len(starts) - 1) if starts[i] <= row < starts[i + 1])
        key = (os.getpid(), path, group)
        if self._cache is None or self._cache[:3] != key:
            table = pq.ParquetFile(path).read_row_group(group, columns=[self.column])
            self._cache = (*key, table.column(self.column).to_pylist())
        value = self._cache[3][row - starts[group]]
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise RecordError("row has no embedded image bytes", file=path, record=where,
                              fix="use a mirror with embedded images")
        return payload_from_bytes(data, where=where)

    def __getstate__(self) -> dict[str, Any]:
        return {"column": self.column, "_cache": None, "_offsets": {}}
