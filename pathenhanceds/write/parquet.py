"""Streaming parquet shards in the layout `load_dataset` reads (`layout`: data/<config>/<split>-NNNNN-of-NNNNN.parquet)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..layout import shard_name
from ..schema import FEATURES

ROW_GROUP_ROWS = 100  # small row groups: image rows are large, and streaming reads one group at a time
SHARD_BYTES = 500 << 20


def row_digest_text(row: dict[str, Any]) -> bytes:
    """What the content digest covers: everything but the image bytes (their hashes stand in)."""
    keep = {k: v for k, v in row.items() if k != "images"}
    return json.dumps(keep, sort_keys=True, ensure_ascii=False).encode()


@dataclass
class SplitWriteResult:
    """What `write_split` wrote: shard files, row count, rows per source and image SHA-256 -> row ids."""
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    image_sha256: dict[str, list[str]] = field(default_factory=dict)  # sha -> row ids


def write_split(
    rows: Iterable[dict[str, Any]], directory: Path, split: str, digest: hashlib._Hash,
    shard_bytes: int = SHARD_BYTES,
) -> SplitWriteResult:
    """Write rows to shards, never holding more than one row group in memory."""
    directory.mkdir(parents=True, exist_ok=True)
    schema = FEATURES.arrow_schema
    result = SplitWriteResult()
    tmp_files: list[Path] = []
    writer: pq.ParquetWriter | None = None
    buffer: list[dict[str, Any]] = []
    shard_size = 0

    def flush() -> None:
        nonlocal writer, shard_size
        if not buffer:
            return
        if writer is None:
            tmp = directory / f"{split}-tmp-{len(tmp_files):05d}.parquet"
            tmp_files.append(tmp)
            writer = pq.ParquetWriter(tmp, schema)
        table = pa.Table.from_pylist(buffer, schema=schema)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        shard_size += table.nbytes
        buffer.clear()
        if shard_size >= shard_bytes:
            writer.close()
            writer, shard_size = None, 0

    for row in rows:
        digest.update(row_digest_text(row))
        result.rows += 1
        result.by_source[row["source"]] = result.by_source.get(row["source"], 0) + 1
        for sha in row["image_sha256"]:
            result.image_sha256.setdefault(sha, []).append(row["id"])
        buffer.append(row)
        if len(buffer) >= ROW_GROUP_ROWS:
            flush()
    flush()
    if writer is not None:
        writer.close()
    total = len(tmp_files)
    for i, tmp in enumerate(tmp_files):
        final = directory / shard_name(split, i, total)
        tmp.rename(final)
        result.files.append(final)
    return result
