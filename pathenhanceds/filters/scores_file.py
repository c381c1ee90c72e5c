"""Image scores on disk (`scores.parquet`) and the selections made from them.

One row per scored source record: `image_sha256, source, record_id, subset, p_he, similarity`.
The model id, prompts and threshold used go into the parquet schema metadata, so a build can refuse
a scores file made by another model or for other images instead of silently filtering with it.

Selections (`select_he`, `select_top_k`) take SourceRecords or anything with a `.record` (RowPlans),
so selections can filter before any pixels are loaded; `ScoreTable.verify_image` then checks, when the
pixels are loaded, that the image is still the one that was scored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError

META_KEY = b"pathinsight.scores"
FORMAT_VERSION = 1
HE_THRESHOLD = 0.98  # the paper's P(H&E) cut-off
OPENPATH_TOP_K = 20_000  # the paper's image-text similarity cut for OpenPath

SCHEMA = pa.schema(
    [
        ("image_sha256", pa.string()),
        ("source", pa.string()),
        ("record_id", pa.string()),
        ("subset", pa.string()),
        ("p_he", pa.float64()),
        ("similarity", pa.float64()),
    ]
)
_SCORE_FIX = "re-run `pathinsight data score` with the same --source paths (and --model) as the build"


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """Scores of one source record: its image SHA-256, P(H&E) and (optionally) image-caption similarity."""
    image_sha256: str
    source: str
    record_id: str
    subset: str
    p_he: float | None  # P(H&E) under the softmax over the prompts; None if not scored
    similarity: float | None  # cosine(image, caption); None when the record has no caption


@dataclass(frozen=True)
class ScoreMeta:
    """What produced the scores (stored as JSON in the parquet schema metadata)."""

    model_id: str
    prompts: tuple[str, ...]
    threshold: float = HE_THRESHOLD
    positive_prompt: int = 0  # index of the H&E prompt in `prompts`
    weights_sha256: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The metadata as the JSON bytes stored in the parquet schema metadata."""
        data = asdict(self)
        data["prompts"] = list(self.prompts)
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: Path) -> ScoreMeta:
        """Parse the stored metadata; malformed metadata is an `InputError` naming `path`."""
        try:
            data = json.loads(raw)
            meta = cls(
                model_id=str(data["model_id"]), prompts=tuple(str(p) for p in data["prompts"]),
                threshold=float(data["threshold"]), positive_prompt=int(data.get("positive_prompt", 0)),
                weights_sha256=data.get("weights_sha256"), format_version=int(data["format_version"]),
                extra=dict(data.get("extra") or {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"scores metadata is unreadable ({exc})", file=path, fix=_SCORE_FIX) from exc
        if meta.format_version > FORMAT_VERSION:
            raise InputError(f"scores file format {meta.format_version} is newer than this library understands",
                             file=path, fix="upgrade pathinsight, or re-run `pathinsight data score`")
        return meta


class ScoreTable:
    """Scores in memory, looked up by image SHA-256 or by (source, record_id)."""

    def __init__(self, rows: Iterable[ScoreRow], meta: ScoreMeta, path: Path | None = None):
        self.rows = list(rows)
        self.meta = meta
        self.path = path
        self._by_sha: dict[str, ScoreRow] = {}
        self._by_record: dict[tuple[str, str], ScoreRow] = {}
        self._all_by_sha: dict[str, list[ScoreRow]] = {}
        for row in self.rows:
            key = (row.source, row.record_id)
            if key in self._by_record:
                raise InputError(f"record {row.source}/{row.record_id} is scored twice", file=path,
                                 record=f"{row.source}/{row.record_id}", fix=_SCORE_FIX)
            self._by_record[key] = row
            self._all_by_sha.setdefault(row.image_sha256, []).append(row)
            # p_he is a property of the image; keep the first row that has one.
            if row.image_sha256 not in self._by_sha or self._by_sha[row.image_sha256].p_he is None:
                self._by_sha[row.image_sha256] = row

    @property
    def model_id(self) -> str:
        """Id of the model that produced the scores."""
        return self.meta.model_id

    @property
    def prompts(self) -> tuple[str, ...]:
        """The text prompts the P(H&E) score was computed with."""
        return self.meta.prompts

    @property
    def threshold(self) -> float:
        """The P(H&E) threshold recorded with the scores."""
        return self.meta.threshold

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, sha: object) -> bool:
        return sha in self._by_sha

    def shas(self) -> set[str]:
        """SHA-256 of every scored image."""
        return set(self._by_sha)

    def get(self, sha: str) -> ScoreRow | None:
        """A row of this image (the image-level `p_he` is the same in all of its rows)."""
        return self._by_sha.get(sha)

    def p_he(self, sha: str) -> float | None:
        """P(H&E) of an image by SHA-256, or None if it was not scored."""
        row = self._by_sha.get(sha)
        return None if row is None else row.p_he

    def similarity(self, sha: str) -> float | None:
        """The highest caption similarity among this image's records."""
        values = [r.similarity for r in self.rows_of(sha) if r.similarity is not None and not math.isnan(r.similarity)]
        return max(values) if values else None

    def rows_of(self, sha: str) -> list[ScoreRow]:
        """Every score row of an image (one per record that uses it)."""
        return list(self._all_by_sha.get(sha, ()))

    def for_record(self, source: str, record_id: str) -> ScoreRow | None:
        """The score row of one source record, or None."""
        return self._by_record.get((source, record_id))

    def he_keep(self, sha: str, threshold: float | None = None) -> bool:
        """Whether the image passes the H&E filter (P(H&E) > threshold); unknown images → InputError."""
        p = self.p_he(sha)
        if p is None:
            raise InputError(f"no P(H&E) for image sha256 {sha[:16]}…", file=self.path, fix=_SCORE_FIX)
        return p > (self.threshold if threshold is None else threshold)

    def check_covers(self, shas: Iterable[str]) -> None:
        """Raise if some of these images were never scored (the scores are for other images)."""
        missing = sorted(set(shas) - set(self._by_sha))
        if missing:
            raise InputError(
                f"the scores file has no score for {len(missing)} image(s) of this build "
                f"(e.g. sha256 {missing[0][:16]}…): it was made for other images",
                file=self.path, fix=_SCORE_FIX,
            )

    def verify_image(self, source: str, record_id: str, sha: str) -> None:
        """Raise if the record's image is not the one that was scored (raw files changed since)."""
        row = self.for_record(source, record_id)
        if row is None:
            raise InputError(f"record {source}/{record_id} was not scored", file=self.path,
                             record=f"{source}/{record_id}", fix=_SCORE_FIX)
        if row.image_sha256 != sha:
            raise InputError(
                f"the image of {source}/{record_id} changed since it was scored "
                f"(sha256 {sha[:16]}… now, {row.image_sha256[:16]}… in the scores file)",
                file=self.path, record=f"{source}/{record_id}", fix=_SCORE_FIX,
            )


# ------------------------------------------------------------------------------------------------ I/O
def write_scores(table: ScoreTable, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write `table` as parquet (temp file + rename, so a crash leaves no half-written file)."""
    from ..atomic import atomic_output_file

    path = Path(path).expanduser()
    columns = {name: [getattr(r, name) for r in table.rows] for name in SCHEMA.names}
    arrow = pa.Table.from_pydict(columns, schema=SCHEMA.with_metadata({META_KEY: table.meta.to_json()}))
    # --overwrite replaces only an earlier scores file; a failed write leaves neither temp nor half a file.
    with atomic_output_file(path, overwrite=overwrite, kind="scores") as tmp:
        pq.write_table(arrow, tmp)
    return path


def load_scores(path: str | os.PathLike[str]) -> ScoreTable:
    """Read a scores file written by `pathinsight data score` (no expectations checked)."""
    return read_scores(path)


def read_scores(
    path: str | os.PathLike[str],
    expected_model: str | None = None,
    expected_shas: Iterable[str] | None = None,
    expected_prompts: Iterable[str] | None = None,
) -> ScoreTable:
    """Read and validate a scores file.

    `expected_model` / `expected_prompts`: refuse scores made with another model or prompt set.
    `expected_shas`: refuse a file that lacks any of these images (scores made for other images).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError("scores file does not exist", file=path,
                         fix="create it with `pathinsight data score --source NAME=PATH --output FILE`")
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable parquet file ({exc})", file=path, fix=_SCORE_FIX) from exc
    raw = (arrow.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputError("not a PathInsight scores file (no scoring metadata in the parquet schema)", file=path,
                         fix=_SCORE_FIX)
    meta = ScoreMeta.from_json(raw, path)
    missing_cols = [c for c in SCHEMA.names if c not in arrow.column_names]
    if missing_cols:
        raise InputError(f"scores file lacks column(s) {', '.join(missing_cols)}", file=path, fix=_SCORE_FIX)
    data = arrow.select(SCHEMA.names).to_pydict()
    # NaN is how scorers and pandas spell "no score": treat it as missing. An infinite score is nonsense.
    for name in ("p_he", "similarity"):
        data[name] = [None if isinstance(v, float) and math.isnan(v) else v for v in data[name]]
    rows = [ScoreRow(*values) for values in zip(*(data[c] for c in SCHEMA.names), strict=True)]
    for row in rows:
        for value in (row.p_he, row.similarity):
            if value is not None and not math.isfinite(value):
                raise InputError("scores file holds an infinite score", file=path,
                                 record=f"{row.source}/{row.record_id}", fix=_SCORE_FIX)
    table = ScoreTable(rows, meta, path)
    if expected_model is not None and meta.model_id != expected_model:
        raise InputError(
            f"scores were computed with model {meta.model_id!r}, but this build expects {expected_model!r}",
            file=path, fix=f"re-run `pathinsight data score --model {expected_model}`, or pass the matching --scores file",
        )
    if expected_prompts is not None and tuple(expected_prompts) != meta.prompts:
        raise InputError(
            f"scores were computed with other prompts ({list(meta.prompts)})", file=path,
            fix="re-run `pathinsight data score` with this library's prompts",
        )
    if expected_shas is not None:
        table.check_covers(expected_shas)
    return table


# -------------------------------------------------------------------------------------------- selections
T = TypeVar("T")


@dataclass
class Selection(Generic[T]):
    """Items kept and dropped by a filter; `missing` are items the scores file does not cover."""

    kept: list[T]
    dropped: list[T]
    missing: list[T]
    rule: str

    def summary(self) -> dict[str, Any]:
        """Counts for the manifest: rule, kept, dropped, missing."""
        return {"rule": self.rule, "kept": len(self.kept), "dropped": len(self.dropped), "missing": len(self.missing)}


def record_key(item: Any) -> tuple[str, str]:
    """(source, record_id) of a SourceRecord, or of the `.record` of a RowPlan."""
    rec = getattr(item, "record", item)
    return rec.source, rec.record_id


def _rows_for(items: Iterable[T], table: ScoreTable, missing: str) -> tuple[list[tuple[T, ScoreRow]], list[T]]:
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', not {missing!r}")
    found: list[tuple[T, ScoreRow]] = []
    absent: list[T] = []
    for item in items:
        row = table.for_record(*record_key(item))
        if row is None:
            absent.append(item)
        else:
            found.append((item, row))
    if absent and missing == "error":
        source, record_id = record_key(absent[0])
        raise InputError(
            f"the scores file has no score for {len(absent)} record(s) (e.g. {source}/{record_id})",
            file=table.path, record=f"{source}/{record_id}", fix=_SCORE_FIX,
        )
    return found, absent


def select_he(
    items: Iterable[T], table: ScoreTable, threshold: float | None = None, *, missing: str = "error"
) -> Selection[T]:
    """Keep items whose image has P(H&E) > threshold (default: the file's threshold, the paper's 0.98)."""
    threshold = table.threshold if threshold is None else threshold
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"H&E threshold must be in [0, 1), not {threshold}", fix="use e.g. --he-threshold 0.98")
    found, absent = _rows_for(items, table, missing)
    kept: list[T] = []
    dropped: list[T] = []
    for item, row in found:
        if row.p_he is None:
            raise InputError(f"record {row.source}/{row.record_id} has no P(H&E) score", file=table.path,
                             fix=_SCORE_FIX)
        (kept if row.p_he > threshold else dropped).append(item)
    return Selection(kept, dropped, absent, f"P(H&E) > {threshold}")


def select_top_k(
    items: Iterable[T], table: ScoreTable, k: int = OPENPATH_TOP_K, *, by: str = "similarity",
    missing: str = "error",
) -> Selection[T]:
    """Keep the `k` items with the highest score `by` ("similarity" or "p_he"), in input order.

    Ties are broken by (source, record_id) so the result does not depend on input order; items
    without that score (no caption) are dropped.
    """
    if k < 0:
        raise InputError(f"top-k must be >= 0, not {k}", fix="pass a positive --top-k")
    if by not in ("similarity", "p_he"):
        raise ValueError(f"by must be 'similarity' or 'p_he', not {by!r}")
    found, absent = _rows_for(items, table, missing)
    def value(r: ScoreRow) -> float | None:
        score = getattr(r, by)
        return None if score is None or math.isnan(score) else score  # NaN: not scored


    ranked = sorted((i for i, (_, r) in enumerate(found) if value(r) is not None),
                    key=lambda i: (-value(found[i][1]), record_key(found[i][0])))  # type: ignore[operator]
    chosen = set(ranked[:k])
    kept = [item for i, (item, _) in enumerate(found) if i in chosen]
    dropped = [item for i, (item, _) in enumerate(found) if i not in chosen]
    return Selection(kept, dropped, absent, f"top {k} by {by}")
