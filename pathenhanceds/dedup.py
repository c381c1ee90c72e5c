"""Duplicate images across a whole build: exact (SHA-256) and near (64-bit perceptual hash).

The point is leakage: a train row whose image also appears in validation/test (of any source) or in
an external benchmark (`--dedup-against`) must go. `HeldOutIndex` decides, row by row while the build
streams (see `pipeline.Pipeline`: held-out splits are loaded first, train rows checked against them);
`find_duplicate_groups` finds every exact/near group among all images afterwards, and `dedup_summary`
condenses groups and removed rows for the manifest and card. `items_from_build` and
`load_reference_images` feed the same functions to audit a finished build against a benchmark.

Near duplicates: each distinct image is hashed once (imagehash.phash, 8x8 DCT = 64 bits); pairs
within `near_threshold` bits are found by splitting the hash into `near_threshold + 1` bands and
comparing only images that agree on a band (pigeonhole: two hashes within t bits agree exactly on
at least one of t + 1 bands), so no pair is missed and unrelated images are rarely compared.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .errors import InputError
from .images import payload_from_bytes, sniff_format
from .layout import DATA_DIR

HASH_BITS = 64
TRAIN = "train"
REFERENCE = "reference"  # split name of external benchmark images: always held out
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
# With t + 1 bands of w bits, banding costs about (t + 1) / 2**w of comparing every pair; from t = 12 on
# (13 bands of <= 5 bits) that saving is gone, so compare everything in vectorised chunks instead.
_BRUTE_FORCE_BANDS = 13
_CHUNK_CELLS = 1 << 22  # distance cells per numpy chunk (~32 MB of uint64)


@dataclass(frozen=True, slots=True)
class ImageItem:
    """One image of one row. Give `image_bytes` (or a precomputed `phash`) for near-duplicate search."""

    id: str
    split: str
    source: str
    sha256: str
    image_bytes: bytes | None = None
    phash: int | None = None


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One image of a duplicate group (an `ImageItem` without its bytes)."""
    id: str
    split: str
    source: str
    sha256: str
    phash: int | None


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows sharing one image (`exact`) or images within `threshold` phash bits of each other (`near`)."""

    kind: str  # "exact" | "near"
    members: tuple[GroupMember, ...]
    threshold: int = 0

    @property
    def splits(self) -> set[str]:
        """The splits the group's images come from."""
        return {m.split for m in self.members}

    @property
    def crosses_splits(self) -> bool:
        """Train and held-out (validation/test/reference) rows in one group: a leak."""
        return TRAIN in self.splits and len(self.splits) > 1


# -------------------------------------------------------------------------------------------- hashing
def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


def _phash_image(image: Image.Image) -> int:
    import imagehash

    bits = imagehash.phash(image.convert("RGB")).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def perceptual_hash(data: bytes, *, where: str = "image") -> int:
    """64-bit perceptual hash (imagehash.phash) of encoded image bytes."""
    return _phash_image(_decode(data, where))


def _decode(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot decode image ({exc})", record=where,
                         fix="remove or replace this file (or fix the dataset row)") from exc
    return image


def check_threshold(near_threshold: int | None) -> None:
    """`InputError` unless `near_threshold` is None or an integer from 0 to 64 bits."""
    if near_threshold is None:
        return
    if isinstance(near_threshold, bool) or not isinstance(near_threshold, int) or not 0 <= near_threshold <= HASH_BITS:
        raise InputError(f"near-duplicate threshold must be an integer from 0 to {HASH_BITS} bits, "
                         f"not {near_threshold!r}", fix="use e.g. --near-dup-threshold 4 (0 = identical phash)")


def _bands(t: int) -> list[tuple[int, int]]:
    """(shift, width) of t + 1 bands covering the 64 bits as evenly as possible."""
    n = t + 1
    widths = [HASH_BITS // n + (1 if i < HASH_BITS % n else 0) for i in range(n)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths, strict=True))


def _close_pairs(hashes: np.ndarray, rows: np.ndarray, t: int) -> Iterator[tuple[int, int]]:
    """Pairs (i < j) among the sorted indices `rows` whose hashes differ in at most t bits."""
    step = max(1, _CHUNK_CELLS // max(len(rows), 1))
    for start in range(0, len(rows), step):
        block, later = rows[start : start + step], rows[start:]  # each pair is compared once
        dist = np.bitwise_count(hashes[block][:, None] ^ hashes[later][None, :])
        for r, c in zip(*np.nonzero(dist <= t), strict=True):
            i, j = int(block[r]), int(later[c])
            if i < j:
                yield i, j


def near_pairs(hashes: list[int], threshold: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose hashes differ in at most `threshold` bits."""
    check_threshold(threshold)
    arr = np.array(hashes, dtype=np.uint64)
    n = len(arr)
    if n < 2:
        return set()
    if threshold + 1 >= _BRUTE_FORCE_BANDS:
        return set(_close_pairs(arr, np.arange(n), threshold))
    pairs: set[tuple[int, int]] = set()
    for shift, width in _bands(threshold):
        keys = (arr >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        bounds = np.flatnonzero(np.diff(keys[order])) + 1
        for bucket in np.split(order, bounds):
            if len(bucket) > 1:
                pairs.update(_close_pairs(arr, np.sort(bucket), threshold))
    return pairs


# ----------------------------------------------------------------------------------------- grouping
class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def find_duplicate_groups(items: Iterable[ImageItem], near_threshold: int | None = None) -> list[DuplicateGroup]:
    """Exact groups (rows sharing a SHA-256) and, if `near_threshold` is set, near groups.

    A near group is a connected set of >= 2 distinct images whose phashes are within
    `near_threshold` bits pairwise-linked (transitively); `HeldOutIndex` still only drops rows
    directly within the threshold of a held-out image. Each image is hashed once.
    """
    check_threshold(near_threshold)
    members: dict[str, list[GroupMember]] = defaultdict(list)
    phash: dict[str, int] = {}
    for item in tqdm(items, desc="hashing images", unit="img", leave=False):
        if near_threshold is not None and item.sha256 not in phash:
            if item.phash is not None:
                phash[item.sha256] = item.phash
            elif item.image_bytes is not None:
                phash[item.sha256] = perceptual_hash(item.image_bytes, where=item.id)
            else:
                raise ValueError(f"{item.id}: near-duplicate search needs image_bytes or phash")
        members[item.sha256].append(GroupMember(item.id, item.split, item.source, item.sha256, phash.get(item.sha256)))
    groups = [DuplicateGroup("exact", tuple(sorted(ms, key=lambda m: m.id)))
              for _, ms in sorted(members.items()) if len(ms) > 1]
    if near_threshold is None:
        return groups
    shas = sorted(members)
    found = _UnionFind(len(shas))
    for i, j in near_pairs([phash[s] for s in shas], near_threshold):
        found.union(i, j)
    components: dict[int, list[str]] = defaultdict(list)
    for i, sha in enumerate(shas):
        components[found.find(i)].append(sha)
    for _, component in sorted(components.items()):
        if len(component) > 1:
            group = sorted((m for sha in component for m in members[sha]), key=lambda m: m.id)
            groups.append(DuplicateGroup("near", tuple(group), near_threshold))
    return groups


def dedup_summary(
    groups: list[DuplicateGroup], dropped: dict[str, str], items: Iterable[ImageItem] | None = None,
    near_threshold: int | None = None, references: Iterable[str] = (),
) -> dict[str, Any]:
    """Numbers for manifest.json and the dataset card. `items` (optional) adds row/image totals."""
    by_id: dict[str, GroupMember] = {m.id: m for g in groups for m in g.members}
    removed: dict[str, dict[str, int]] = {}
    because: dict[str, int] = defaultdict(int)
    for row_id, reason in dropped.items():
        member = by_id.get(row_id)
        source = member.source if member else row_id.split("/", 1)[0]
        removed.setdefault(source, {}).setdefault(TRAIN, 0)
        removed[source][TRAIN] += 1
        because["exact" if reason.startswith("exact") else "near"] += 1
    exact = [g for g in groups if g.kind == "exact"]
    near = [g for g in groups if g.kind == "near"]
    summary: dict[str, Any] = {
        "hash": f"sha256 + imagehash.phash ({HASH_BITS} bits)",
        "near_threshold": near_threshold,
        "exact_groups": len(exact),
        "exact_groups_across_splits": sum(g.crosses_splits for g in exact),
        "near_groups": len(near),
        "near_groups_across_splits": sum(g.crosses_splits for g in near),
        "rows_removed": {s: dict(sorted(v.items())) for s, v in sorted(removed.items())},
        "rows_removed_total": len(dropped),
        "rows_removed_by_kind": dict(sorted(because.items())),
        "references": list(references),
    }
    if items is not None:
        materialised = list(items)
        own = [i for i in materialised if i.split != REFERENCE]
        summary["rows"] = len({i.id for i in own})
        summary["images"] = len({i.sha256 for i in own})
        summary["reference_images"] = len({i.sha256 for i in materialised if i.split == REFERENCE})
    return summary


# ----------------------------------------------------------------------------------------- inputs
def items_from_rows(rows: Iterable[dict[str, Any]], split: str, *, with_bytes: bool = True) -> Iterator[ImageItem]:
    """ImageItems of schema rows (`id`, `source`, `images`, `image_sha256`); image k > 0 gets id `ID#k`."""
    for row in rows:
        images = row.get("images") or []
        for k, sha in enumerate(row["image_sha256"]):
            data = images[k].get("bytes") if with_bytes and k < len(images) and images[k] else None
            yield ImageItem(row["id"] if k == 0 else f"{row['id']}#{k}", split, row["source"], sha, data)


def items_from_build(path: str | os.PathLike[str], *, with_bytes: bool = True) -> Iterator[ImageItem]:
    """ImageItems of every row of a built dataset folder (`data/<config>/<split>-*.parquet`)."""
    root = Path(path)
    files = sorted((root / DATA_DIR).glob("*/*.parquet"))
    if not files:
        raise InputError("no data/<config>/<split>-*.parquet files: not a PathEnhanceDS build", file=root,
                         fix="pass the --output folder of `pathinsight data build`")
    columns = ["id", "source", "image_sha256"] + (["images"] if with_bytes else [])
    for file in files:
        split = file.name.split("-", 1)[0]
        for batch in pq.ParquetFile(file).iter_batches(batch_size=64, columns=columns):
            yield from items_from_rows(batch.to_pylist(), split, with_bytes=with_bytes)


def _reference_item(data: bytes, item_id: str, source: str) -> ImageItem:
    """sha256 as the builder would compute it (TIFF etc. are stored as PNG), plus the phash."""
    image = _decode(data, item_id)
    if sniff_format(data) in ("jpeg", "png"):
        sha = hashlib.sha256(data).hexdigest()
    else:
        sha = payload_from_bytes(data, where=item_id, require_rgb_tiff=False).sha256
    return ImageItem(item_id, REFERENCE, source, sha, None, _phash_image(image))


def _image_columns(schema: pa.Schema) -> list[str]:
    def is_image(t: pa.DataType) -> bool:
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0

    cols = []
    for f in schema:
        if is_image(f.type) or (pa.types.is_list(f.type) and is_image(f.type.value_type)):
            cols.append(f.name)
        elif pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            cols.append(f.name)
    return cols


def _parquet_items(file: Path, label: str, source: str) -> Iterator[ImageItem]:
    try:
        parquet = pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable parquet file ({exc})", file=file, fix="re-download it") from exc
    columns = _image_columns(parquet.schema_arrow)
    if not columns:
        raise InputError("parquet file has no image column (struct with 'bytes', or binary)", file=file,
                         fix="pass a benchmark in the Hugging Face Image format, or an image folder")
    row = 0
    for batch in parquet.iter_batches(batch_size=64, columns=columns):
        for record in batch.to_pylist():
            for column in columns:
                values = record[column]
                values = values if isinstance(values, list) else [values]
                for k, value in enumerate(values):
                    data = value.get("bytes") if isinstance(value, dict) else value
                    if data:
                        suffix = f"/{k}" if len(values) > 1 else ""
                        yield _reference_item(data, f"{label}#{row}:{column}{suffix}", source)
            row += 1


def load_reference_images(path: str | os.PathLike[str]) -> list[ImageItem]:
    """Images of an external benchmark (held out, split `reference`) for `--dedup-against PATH`.

    PATH is an image folder (searched recursively for .jpg/.jpeg/.png/.tif/.tiff), a parquet file, or a
    folder of parquet files with an image column (e.g. a Hub benchmark such as PathMMU). Items carry
    their phash and no bytes, so a large benchmark costs little memory.
    """
    import warnings

    from . import limits as input_limits
    from .errors import RecordError

    lim = input_limits.current()
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError("--dedup-against path does not exist", file=root,
                         fix="pass a benchmark image folder or parquet file/folder")
    source = f"{REFERENCE}:{root.stem if root.is_file() else root.name}"
    if root.is_file():
        files = [root]
        base = root.parent
    else:  # iterative, depth-limited and loop-safe; FIFOs, devices and dangling links are left out
        files = [p for p in input_limits.walk_files(root, limits=lim) if input_limits.is_regular(p, lim)]
        base = root
    wanted = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES | {".parquet"}]
    if not wanted:
        raise InputError("no images (.jpg/.png/.tif) or parquet files found", file=root,
                         fix="pass the benchmark's image folder or its parquet files")
    items: list[ImageItem] = []
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Parquet cells are decoded by Pillow directly: make its header check enforce our pixel limit.
            Image.MAX_IMAGE_PIXELS = lim.max_image_pixels
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for file in tqdm(wanted, desc=f"hashing {source}", unit="file", leave=False):
                label = f"{source}/{file.relative_to(base).as_posix()}"
                try:
                    if file.suffix.lower() == ".parquet":
                        items.extend(_parquet_items(file, label, source))
                    else:
                        data = input_limits.read_regular(file, max_bytes=lim.max_image_bytes, limit_name="max_image_bytes",
                                                         error=InputError, limits=lim, what="benchmark image")
                        input_limits.open_image_header(data, file=file, record=label, limits=lim)  # before decoding
                        items.append(_reference_item(data, label, source))
                except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
                    raise InputError(f"benchmark image declares too many pixels ({input_limits.clean_message(exc)})",
                                     file=file, record=label,
                                     fix="remove it from the --dedup-against folder, or raise limits.max_image_pixels") from None
                except RecordError as err:  # reference images are not records: the whole option is wrong
                    raise InputError(f"cannot decode benchmark image: {err.reason}", file=err.file or file,
                                     record=err.record or label,
                                     fix="remove or replace this file in the --dedup-against folder") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    return items


class HeldOutIndex:
    """Held-out images (validation, test, references) that train images are checked against while streaming.

    The production drop path: `Pipeline` indexes every held-out split first, so each train row can be
    dropped the moment its image is loaded. Exact matches (same SHA-256) win over near ones; among
    several near matches the closest, then the lowest id, is named. Items without a `phash` get one
    from their `image_bytes` when a near threshold is set.
    """

    def __init__(self, near_threshold: int | None = None):
        check_threshold(near_threshold)
        self.near_threshold = near_threshold
        self._exact: dict[str, GroupMember] = {}
        self._near: list[GroupMember] = []
        self._hashes = np.zeros(0, np.uint64)

    def __len__(self) -> int:
        """Distinct held-out images indexed."""
        return len(self._exact)

    def _phash(self, item: ImageItem) -> int | None:
        if self.near_threshold is None:
            return None
        if item.phash is None and item.image_bytes is not None:
            return perceptual_hash(item.image_bytes, where=item.id)
        return item.phash

    def add(self, item: ImageItem) -> None:
        """Index one held-out image (its split is named in the reasons `match` gives)."""
        member = GroupMember(item.id, item.split, item.source, item.sha256, self._phash(item))
        if item.sha256 not in self._exact or member.id < self._exact[item.sha256].id:
            self._exact[item.sha256] = member
        if member.phash is not None:
            self._near.append(member)
            self._hashes = np.empty(0, np.uint64)  # rebuilt lazily

    def match(self, item: ImageItem) -> str | None:
        """Why this train image must go (an exact or near duplicate of a held-out image), or None."""
        held = self._exact.get(item.sha256)
        if held is not None:
            return f"exact duplicate of {held.split} image {held.id} ({held.source})"
        phash = self._phash(item)
        if phash is None or not self._near:
            return None
        if len(self._hashes) != len(self._near):
            self._hashes = np.array([m.phash for m in self._near], dtype=np.uint64)
        dist = np.bitwise_count(self._hashes ^ np.uint64(phash))
        best = int(dist.min())
        if best > self.near_threshold:
            return None
        held = min((m for m, d in zip(self._near, dist.tolist(), strict=True) if d == best), key=lambda m: m.id)
        return f"near duplicate (phash distance {best} <= {self.near_threshold}) of {held.split} image {held.id} ({held.source})"
