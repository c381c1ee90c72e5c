"""What every raw-source reader provides.

A reader lists cheap `SourceRecord`s (ids, labels, text; no pixels) so that selections can select
and split without decoding images, then loads the pixels of the selected records on demand.
Readers must be picklable (worker processes re-open files lazily).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError, RecordError
from ..images import ImagePayload, payload_from_file
from ..limits import Limits, check_regular, clean_message, current, inside, walk_files
from ..registry import Registry


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One raw record. `locator` is opaque to everything but the reader that made it."""

    source: str
    record_id: str  # stable and unique within the source
    subset: str  # the source's own partition: "train", "valid", "CRC-VAL-HE-7K", "textbook", ...
    locator: Any
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildContext:
    """Collects what a build must report: skipped records, notes and warnings."""

    on_error: str = "fail"  # "fail" | "skip"
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # source -> {count key -> number}: what a selection left out or changed (manifest `selection_counts`, card).
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    count_labels: dict[str, str] = field(default_factory=dict)  # "source/key" -> the card's wording
    # What readers may open and how much (default: the process-wide `pathenhanceds.limits.current()`).
    limits: Limits = field(default_factory=current)
    # Follow symlinks placed in the source folders (None: as `limits.follow_symlinks`, True by default).
    follow_symlinks: bool | None = None

    def __post_init__(self) -> None:
        if self.follow_symlinks is None:
            self.follow_symlinks = self.limits.follow_symlinks
        elif self.follow_symlinks != self.limits.follow_symlinks:
            self.limits = self.limits.replace(follow_symlinks=self.follow_symlinks)

    def bad_record(self, error: RecordError) -> None:
        """Raise in `fail` mode; otherwise remember the record and its reason."""
        if self.on_error != "skip":
            raise error
        # No memory addresses in reports: two identical builds must write identical manifests.
        self.skipped.append({"file": clean_message(error.file or ""), "record": clean_message(error.record or ""),
                             "reason": clean_message(error.reason)})

    def note(self, text: str) -> None:
        """Record an informational note for the manifest and card (once per text)."""
        if text not in self.notes:
            self.notes.append(text)

    def count(self, source: str, key: str, n: int, label: str) -> None:
        """Record what a selection left out or changed (e.g. bladder images with label 3) for the manifest's
        `selection_counts` and the card's counts section. Set, not added: planning twice reports the same."""
        self.counts.setdefault(source, {})[key] = int(n)
        self.count_labels[f"{source}/{key}"] = label

    def warn(self, text: str) -> None:
        """Record a warning for the manifest and card (once per text) and emit it as a Python warning."""
        import warnings

        if text not in self.warnings:
            self.warnings.append(text)
            warnings.warn(text, stacklevel=2)


class Source(ABC):
    """A reader for one raw source in every native layout it is distributed in."""

    name: ClassVar[str]
    license: ClassVar[str]
    description: ClassVar[str] = ""

    limits: Limits | None = None  # set from the BuildContext by `bind`; None: the process-wide limits

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise InputError(
                f"{self.name}: path does not exist",
                file=self.path,
                fix=f"pass --source {self.name}=DIR with the folder you downloaded",
            )

    @property
    def lim(self) -> Limits:
        """The limits this reader applies."""
        return self.limits or current()

    def bind(self, ctx: BuildContext) -> None:
        """Adopt the build's limits (readers call this first in `records`; workers inherit them)."""
        self.limits = ctx.limits

    @property
    def source_root(self) -> Path:
        """The folder that paths read from inside input files must stay in."""
        return self.path if self.path.is_dir() else self.path.parent

    def resolve(self, base: Path, rel: str, *, file: object, record: object, what: str = "image path") -> Path:
        """`base / rel` for a path read from an input file; `RecordError` if it leaves the source folder."""
        return inside(self.source_root, base, rel, file=file, record=record, what=what, limits=self.lim)

    def walk(self, root: Path | None = None, *, suffixes: set[str] | None = None, name: str | None = None) -> list[Path]:
        """Files below `root` (default: the source folder), depth-limited and loop-safe."""
        return walk_files(self.path if root is None else root, limits=self.lim, suffixes=suffixes, name=name)

    @abstractmethod
    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        """All records, in a stable order, without decoding images."""

    def load_image(self, record: SourceRecord) -> ImagePayload:
        """The record's image; raises `RecordError` for a corrupt one.

        Handles `("file", path)` locators; readers with other locators override this.
        """
        if record.locator[0] != "file":
            raise NotImplementedError(f"{type(self).__name__} cannot load locator {record.locator[0]!r}")
        return payload_from_file(record.locator[1], where=f"{self.name}/{record.record_id}", root=self.source_root,
                                 limits=self.lim)

    def input_files(self) -> list[Path]:
        """Files the reader reads, for the manifest (sizes and MD5s); only regular files."""
        from ..limits import is_regular

        return [p for p in self.walk() if is_regular(p, self.lim)] if self.path.is_dir() else [self.path]

    def close(self) -> None:
        """Release open handles and temporary files (called at the end of a build)."""
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in [k for k in state if k.startswith("_cache")]:
            state[key] = None
        return state


class ScannedSource(Source):
    """A reader that reads its metadata files in one scan (`_scan`), kept for `input_files`.

    Subclasses define `_scan` and `metadata_files`; their records use `("file", path)` locators.
    """

    _cache_records: list[SourceRecord] | None = None

    @abstractmethod
    def _scan(self, ctx: BuildContext) -> list[SourceRecord]:
        """Every record of the metadata files, reporting bad records and skips to `ctx`."""

    @abstractmethod
    def metadata_files(self) -> list[Path]:
        """The files read besides the images (for the manifest)."""

    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self.bind(ctx)
        self._cache_records = self._scan(ctx)
        yield from self._cache_records

    def input_files(self) -> list[Path]:
        """The metadata files and the images of the records read (not every file of the image folders)."""
        records = self._cache_records
        if records is None:
            records = self._scan(BuildContext(on_error="skip"))
        return sorted({*self.metadata_files(), *(Path(r.locator[1]) for r in records)})

    def find_image(self, roots: Iterable[Path], rel: str, *, file: Path, record: str, what: str) -> Path | None:
        """The first `root / rel` that exists, checked to be a regular file; None if it is in no root."""
        for base in roots:
            candidate = self.resolve(base, rel, file=file, record=record)
            if os.path.lexists(candidate):  # present but not a regular file: an error, not "missing"
                check_regular(candidate, file=file, record=record, limits=self.lim, root=self.source_root, what=what)
                return candidate
        return None


SOURCES: Registry[type[Source]] = Registry("source", fix="pass --source NAME=PATH with one of: {names}")


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make a reader available under `cls.name` (a second class under a name raises)."""
    return SOURCES.register(cls.name, cls)


def get_source(name: str) -> type[Source]:
    """The reader class registered under `name`; an `InputError` naming the closest source otherwise."""
    return SOURCES.get(name)


def list_sources() -> list[str]:
    """Registered source names, sorted (the NAME of `--source NAME=PATH`)."""
    return SOURCES.names()


def file_md5(path: Path, chunk: int = 1 << 20, progress: Callable[[int], None] | None = None) -> str:
    """MD5 hex digest of a file, read in chunks (`progress` gets the bytes of each chunk)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    from ..limits import open_regular

    digest = hashlib.sha256()
    with open_regular(path) as handle:  # never blocks on a FIFO swapped in since the reader checked it
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def link_by_identical_files(items: Iterable[tuple[Hashable, Path]]) -> dict[Hashable, Hashable]:
    """Group keys whose files have identical bytes: key -> smallest key of its group.

    Splitting by this group keeps byte-identical images (reposted figures, retweets) in one split.
    Only files that share a size are hashed, so the cost is one `stat` per file in practice.
    """
    items = list(items)
    parent: dict[Hashable, Hashable] = {}

    def find(k: Hashable) -> Hashable:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a: Hashable, b: Hashable) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb), key=str)
            parent[hi] = lo

    by_size: dict[int, set[Path]] = defaultdict(set)
    keys_of: dict[Path, list[Hashable]] = defaultdict(list)
    for key, path in items:
        parent.setdefault(key, key)
        keys_of[path].append(key)
        by_size[path.stat().st_size].add(path)
    for keys in keys_of.values():  # one file named by several keys
        for k in keys[1:]:
            union(keys[0], k)
    for paths in by_size.values():
        if len(paths) < 2:
            continue
        first_by_digest: dict[str, Path] = {}
        for path in sorted(paths):
            digest = _sha256_file(path)
            if digest in first_by_digest:
                union(keys_of[first_by_digest[digest]][0], keys_of[path][0])
            else:
                first_by_digest[digest] = path
    return {k: find(k) for k in parent}
