"""What every raw-source reader provides.

A reader lists cheap `SourceRecord`s (ids, labels, text; no pixels) so that recipes can select
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

    def bad_record(self, error: RecordError) -> None:
        """Raise in `fail` mode; otherwise remember the record and its reason."""
        if self.on_error != "skip":
            raise error
        self.skipped.append(
            {"file": error.file or "", "record": error.record or "", "reason": error.reason}
        )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def warn(self, text: str) -> None:
        import warnings

        if text not in self.warnings:
            self.warnings.append(text)
            warnings.warn(text, stacklevel=2)


class Source(ABC):
    """A reader for one raw source in every native layout it is distributed in."""

    name: ClassVar[str]
    license: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise InputError(
                f"{self.name}: path does not exist",
                file=self.path,
                fix=f"pass --source {self.name}=DIR with the folder you downloaded",
            )

    @abstractmethod
    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        """All records, in a stable order, without decoding images."""

    def load_image(self, record: SourceRecord) -> ImagePayload:
        """The record's image; raises `RecordError` for a corrupt one.

        Handles `("file", path)` locators; readers with other locators override this.
        """
        if record.locator[0] != "file":
            raise NotImplementedError(f"{type(self).__name__} cannot load locator {record.locator[0]!r}")
        return payload_from_file(record.locator[1], where=f"{self.name}/{record.record_id}")

    def input_files(self) -> list[Path]:
        """Files the reader reads, for the manifest (sizes and MD5s)."""
        return sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]

    def close(self) -> None:
        """Release open handles and temporary files (called at the end of a build)."""
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in [k for k in state if k.startswith("_cache")]:
            state[key] = None
        return state


SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make a reader available under `cls.name`."""
    if cls.name in SOURCES and SOURCES[cls.name] is not cls:
        raise ValueError(f"source {cls.name!r} registered twice")
    SOURCES[cls.name] = cls
    return cls


def get_source(name: str) -> type[Source]:
    try:
        return SOURCES[name]
    except KeyError:
        raise InputError(
            f"unknown source {name!r}",
            fix=f"use one of: {', '.join(sorted(SOURCES))}",
        ) from None


def file_md5(path: Path, chunk: int = 1 << 20, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if progress:
                progress(len(block))
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
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in first_by_digest:
                union(keys_of[first_by_digest[digest]][0], keys_of[path][0])
            else:
                first_by_digest[digest] = path
    return {k: find(k) for k in parent}
