"""Whole-slide images: a slide index by file stem, and patches cut at level 0 with OpenSlide.

OpenSlide quirks handled here (measured with openslide-bin 4.0.1): `read_region` never raises for a
region outside the slide (it returns transparent black), so bounds are checked before reading; a
missing, empty, truncated or foreign file all raise the same `OpenSlideError`, so the file is checked
first to report the right cause; after a read error a handle fails every later read, so it is reopened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, RecordError
from .limits import Limits, check_regular, clean_message, current, walk_files

# File suffixes OpenSlide reads (openslide.org/formats); other files can still match a wsi_id and are
# then reported as a format OpenSlide cannot read.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm")
# Never slides: gdc-client's sidecars and the usual notes beside downloads.
_NOT_SLIDES = (".partial", ".txt", ".json", ".md", ".log", ".csv", ".tsv", ".xml", ".py", ".sh", ".parquet")
_SKIP_DIRS = ("logs",)  # gdc-client writes <dir>/logs/
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

CONVERT_FIX = ("convert it to a tiled pyramidal TIFF that OpenSlide reads, e.g. `vips tiffsave SLIDE OUT.tif --tile "
               "--pyramid --compression jpeg --Q 95` (or --compression deflate for lossless), and name it after the "
               "wsi_id")
REDOWNLOAD_FIX = ("re-download the slide (`gdc-client download -m MANIFEST` resumes and checks MD5s), "
                  "or pass --on-error skip")


def slide_key(path: str | os.PathLike[str]) -> str:
    """The index key of a slide file: its name without the slide suffix, lower-cased.

    TCGA names contain a dot (`TCGA-...-DX1.<uuid>.svs`), so only a known suffix is removed.
    """
    name = os.path.basename(os.fspath(path))
    lower = name.lower()
    for suffix in SLIDE_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return os.path.splitext(lower)[0]


def _preference(path: Path, root: Path) -> tuple[int, int, str]:
    # Deterministic tie-break among files with one stem: an OpenSlide format first, then the shallowest
    # path, then the path text (so the same tree always resolves to the same file).
    readable = path.name.lower().endswith(SLIDE_SUFFIXES)
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    return (0 if readable else 1, len(rel.parts), rel.as_posix())


@dataclass
class SlideIndex:
    """Slide files below one or more roots, by `slide_key` (built once per build)."""

    roots: tuple[Path, ...]
    paths: dict[str, Path] = field(default_factory=dict)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)  # key -> every candidate, chosen first

    def lookup(self, wsi_id: str) -> Path | None:
        """The slide file of `wsi_id` (case-insensitive), or None when it is not downloaded."""
        return self.paths.get(wsi_id.strip().lower())

    def __len__(self) -> int:
        return len(self.paths)

    def duplicate_report(self, limit: int = 20) -> list[dict[str, Any]]:
        """The first `limit` duplicated stems with the file kept and the files ignored (relative paths)."""
        out = []
        for key in sorted(self.duplicates)[:limit]:
            chosen, *others = self.duplicates[key]
            out.append({"wsi_id": key, "used": self.relative(chosen), "ignored": [self.relative(p) for p in others]})
        return out

    def relative(self, path: Path) -> str:
        """`path` relative to the root it was found under (manifests never store absolute paths)."""
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name


def build_slide_index(roots: Iterable[str | os.PathLike[str]], limits: Limits | None = None) -> SlideIndex:
    """Walk every root recursively (any depth: flat folders, gdc-client's `<file_uuid>/<name>.svs`).

    Skips gdc-client's `*.partial` downloads and `logs/` folders, hidden entries and obvious sidecar
    files. Several files with one stem are resolved deterministically (`_preference`) and reported.
    """
    limits = limits or current()
    resolved = tuple(Path(r).expanduser() for r in roots)
    candidates: dict[str, list[tuple[tuple[int, int, str], Path]]] = {}
    for root in resolved:
        if not root.is_dir():
            raise InputError("slide folder does not exist", file=root,
                             fix="pass --pathgen-slides DIR with the folder gdc-client downloaded into, "
                                 "or put the slides under <pathgen dir>/slides/")
        for path in walk_files(root, limits=limits):
            rel_parts = path.relative_to(root).parts
            if any(part.lower() in _SKIP_DIRS for part in rel_parts[:-1]):
                continue
            if path.name.lower().endswith(_NOT_SLIDES):
                continue
            candidates.setdefault(slide_key(path), []).append((_preference(path, root), path))
    index = SlideIndex(resolved)
    for key in sorted(candidates):
        ranked = [p for _, p in sorted(candidates[key], key=lambda c: c[0])]
        index.paths[key] = ranked[0]
        if len(ranked) > 1:
            index.duplicates[key] = ranked
    return index


@dataclass(frozen=True)
class SlideInfo:
    """What a build records about one slide (level-0 size, microns per pixel, scanner)."""

    width: int
    height: int
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    vendor: str | None
    levels: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"width": self.width, "height": self.height, "mpp_x": self.mpp_x, "mpp_y": self.mpp_y,
                "objective_power": self.objective_power, "vendor": self.vendor, "levels": self.levels}


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _open_error(path: Path, exc: Exception, record: object) -> RecordError:
    """The right cause and fix for a slide OpenSlide refused to open."""
    message = clean_message(exc)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        head = b""
    if "unsupported tiff compression" in message.lower():
        return RecordError(f"slide uses a TIFF compression OpenSlide cannot decode ({message})", file=path,
                           record=record, fix=CONVERT_FIX)
    if not path.name.lower().endswith(SLIDE_SUFFIXES) and head not in _TIFF_MAGIC:
        return RecordError(f"slide is in a format OpenSlide cannot read ({path.suffix or 'no suffix'}; {message})",
                           file=path, record=record, fix=CONVERT_FIX)
    if head in _TIFF_MAGIC:
        return RecordError(f"slide is a truncated or corrupt TIFF that OpenSlide cannot open ({message})",
                           file=path, record=record, fix=REDOWNLOAD_FIX)
    return RecordError(f"slide cannot be opened: not a slide OpenSlide reads, or corrupt ({message})", file=path,
                       record=record, fix=f"{REDOWNLOAD_FIX}; if the file is intact, {CONVERT_FIX}")


class Slide:
    """One slide opened with OpenSlide; patches are cut at level 0 with bounds checked here."""

    def __init__(self, path: str | os.PathLike[str], *, record: object = None, limits: Limits | None = None):
        import openslide

        self.path = Path(path)
        self._openslide = openslide
        info = check_regular(self.path, record=record, limits=limits, what="slide")
        if info.st_size == 0:
            raise RecordError("slide is an empty file", file=self.path, record=record, fix=REDOWNLOAD_FIX)
        self._handle: Any = self._open(record)
        props = self._handle.properties
        width, height = self._handle.dimensions
        self.info = SlideInfo(
            width=int(width), height=int(height), mpp_x=_float(props.get("openslide.mpp-x")),
            mpp_y=_float(props.get("openslide.mpp-y")),
            objective_power=_float(props.get("openslide.objective-power")),
            vendor=props.get("openslide.vendor"), levels=int(self._handle.level_count),
        )

    def _open(self, record: object) -> Any:
        try:
            return self._openslide.OpenSlide(str(self.path))
        except (self._openslide.OpenSlideError, OSError) as exc:
            raise _open_error(self.path, exc, record) from None

    def check_bounds(self, x: int, y: int, size: int, *, record: object = None) -> None:
        """A `RecordError` naming the slide if the patch is not wholly inside level 0."""
        width, height = self.info.width, self.info.height
        if x < 0 or y < 0 or x + size > width or y + size > height:
            raise RecordError(
                f"patch at ({x}, {y}) of {size}x{size} px lies outside the slide ({width}x{height} px at level 0)",
                file=self.path, record=record,
                fix="check that the slide is the one the record was cut from (same file, not a re-scan), "
                    "or pass --on-error skip")

    def read(self, x: int, y: int, size: int, *, record: object = None) -> np.ndarray:
        """The `size`x`size` RGB patch with its top-left corner at level-0 pixel (x, y)."""
        self.check_bounds(x, y, size, record=record)
        last: Exception | None = None
        for _attempt in range(2):  # a failed handle fails every later read: reopen once and retry
            if self._handle is None:
                self._handle = self._open(record)
            try:
                region = self._handle.read_region((x, y), 0, (size, size))
            except self._openslide.OpenSlideError as exc:
                last = exc
                self._close_handle()
                continue
            # OpenSlide returns premultiplied RGBA; PathGen kept RGB by dropping alpha (PIL convert("RGB")).
            return np.ascontiguousarray(np.asarray(region)[:, :, :3])
        raise RecordError(f"cannot read the patch at ({x}, {y}) from the slide ({clean_message(last)})",
                          file=self.path, record=record, fix=REDOWNLOAD_FIX)

    def _close_handle(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            finally:
                self._handle = None

    def close(self) -> None:
        """Release the OpenSlide handle."""
        self._close_handle()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_slide(path: str | os.PathLike[str], *, limits: Limits | None = None) -> SlideInfo:
    """Open a slide, read its header (size, MPP) and close it; `RecordError` if OpenSlide cannot."""
    with Slide(path, limits=limits) as slide:
        return slide.info
