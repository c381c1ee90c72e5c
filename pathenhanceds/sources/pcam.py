"""PatchCamelyon: `x`/`y` HDF5 files (plain or .h5.gz, meta CSV optional) or the Hub parquet mirror."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import InputError, RecordError
from ..images import ImagePayload, encode_array
from ..limits import MiB, check_pixels, check_regular, clean_message, h5_dataset, open_regular
from .base import BuildContext, Source, SourceRecord, file_md5, register_source
from .parquet_mirror import RowGroupReader, check_one_layout, mirror_split, read_columns

SPLITS = ("train", "valid", "test")
FULL_SIZES = {"train": 262_144, "valid": 32_768, "test": 32_768}
PUBLISHED_MD5 = {
    ("train", "x"): "01844da899645b4d6f84946d417ba453",
    ("train", "y"): "0781386bf6c2fb62d58ff18891466aca",
    ("valid", "x"): "81cf9680f1724c40673f10dc88e909b1",
    ("valid", "y"): "94d8aacc249253159ce2a2e78a86e658",
    ("test", "x"): "2614b2e6717d6356be141d9d6dbfcb7e",
    ("test", "y"): "11ed647efe9fe457a4eb45df1dba19ba",
}
_BLOCK = 256  # patches read from HDF5 at once


def _h5_name(split: str, kind: str) -> str:
    return f"camelyonpatch_level_2_split_{split}_{kind}.h5"


_MIRROR_SPLITS = ("train", "valid", "validation", "test")

@register_source
class PCam(Source):
    """Reader of PatchCamelyon (the HDF5 files, gzipped or not, or the Hub parquet mirror)."""
    name = "pcam"
    license = "CC0-1.0"
    description = "PatchCamelyon 96x96 lymph-node patches, label 1 = tumour in the centre 32x32"

    def __init__(self, path: str | os.PathLike[str], tmp_dir: str | None = None):
        super().__init__(path)
        self.tmp_dir = tmp_dir
        self._unzipped: dict[str, Path] = {}
        self._cache_h5: dict[str, Any] | None = None
        self._cache_block: tuple[int, str, int, np.ndarray] | None = None
        self.parquet = self.walk(suffixes={".parquet"}) if self.path.is_dir() else []
        self._reader = RowGroupReader()
        if not self.parquet:
            self.h5_files = self._find_h5()

    # ---- layout discovery ----
    def _find_h5(self) -> dict[tuple[str, str], Path]:
        found: dict[tuple[str, str], Path] = {}
        for split in SPLITS:
            for kind in ("x", "y"):
                base = _h5_name(split, kind)
                for candidate in (self.path / base, self.path / f"{base}.gz"):
                    if os.path.lexists(candidate):  # a FIFO or folder of that name is an error, not skipped
                        check_regular(candidate, error=InputError, limits=self.lim, root=self.path,
                                      what="PCam file")
                        found[(split, kind)] = candidate
                        break
        if not found:
            raise InputError(
                "no PCam files found (camelyonpatch_level_2_split_<split>_{x,y}.h5[.gz] or parquet mirror)",
                file=self.path,
                fix="point --source pcam= at the folder holding the downloaded PCam files",
            )
        for split, kind in list(found):
            other = "y" if kind == "x" else "x"
            if (split, other) not in found:
                raise InputError(
                    f"PCam {split}: {_h5_name(split, kind)} present but its {other} file is missing",
                    file=found[(split, kind)],
                    fix=f"download {_h5_name(split, other)}(.gz) into the same folder",
                )
        return found

    def _uncompressed(self, path: Path) -> Path:
        """h5py needs random access, so .h5.gz is expanded once into a private temp dir."""
        if path.suffix != ".gz":
            return path
        key = str(path)
        if key not in self._unzipped or not self._unzipped[key].exists():
            target_dir = Path(tempfile.mkdtemp(prefix="pcam-", dir=self.tmp_dir))
            target = target_dir / path.name[:-3]
            try:
                self._gunzip(path, target)
            except BaseException:
                shutil.rmtree(target_dir, ignore_errors=True)
                raise
            self._unzipped[key] = target
        return self._unzipped[key]

    def _gunzip(self, path: Path, target: Path) -> None:
        """Expand with caps: at most `max_gunzip_bytes`, and `max_gunzip_ratio` x the .gz once past 64 MiB."""
        lim = self.lim
        with open_regular(path, error=InputError, limits=lim, root=self.path, what="PCam file") as raw:
            compressed = max(os.fstat(raw.fileno()).st_size, 1)
            total = 0
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as src, open(target, "wb") as dst:
                    while block := src.read(1 << 20):
                        total += len(block)
                        if total > lim.max_gunzip_bytes or (total > 64 * MiB and total > lim.max_gunzip_ratio * compressed):
                            raise InputError(
                                f"expands past {total} bytes from {compressed} compressed (limits max_gunzip_bytes "
                                f"{lim.max_gunzip_bytes}, max_gunzip_ratio {lim.max_gunzip_ratio:g})",
                                file=path, fix="re-download the .h5.gz file; raise the limits if it is genuine")
                        dst.write(block)
            except (OSError, EOFError, ValueError) as exc:
                raise InputError(f"cannot decompress ({clean_message(exc)})", file=path,
                                 fix="re-download the .h5.gz file") from None

    def _h5(self, split: str, kind: str) -> Any:
        if self._cache_h5 is None or self._cache_h5.get("pid") != os.getpid():
            self._cache_h5 = {"pid": os.getpid()}
        key = f"{split}/{kind}"
        if key not in self._cache_h5:
            path = self.h5_files[(split, kind)]
            local = self._uncompressed(path)
            check_regular(local, error=InputError, limits=self.lim, root=None if local != path else self.path,
                          what="PCam file")
            try:
                handle = h5py.File(local, "r")
            except (OSError, ValueError, RuntimeError) as exc:
                raise InputError(f"not a readable HDF5 file ({clean_message(exc)})", file=path,
                                 fix="re-download it") from None
            try:
                self._cache_h5[key] = h5_dataset(handle, kind, file=path, limits=self.lim)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                handle.close()
                raise InputError(f"unreadable HDF5 structure ({clean_message(exc)})", file=path,
                                 fix="re-download it") from None
            except InputError:
                handle.close()
                raise
        return self._cache_h5[key]

    # ---- records ----
    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self.bind(ctx)
        if self.parquet:
            yield from self._parquet_records(ctx)
            return
        for split in SPLITS:
            if (split, "x") not in self.h5_files:
                continue
            x, y = self._h5(split, "x"), self._h5(split, "y")
            x_path, y_path = self.h5_files[(split, "x")], self.h5_files[(split, "y")]
            if x.ndim != 4 or x.shape[3] != 3 or x.dtype != np.uint8:
                raise InputError(
                    f"x has shape {x.shape} dtype {x.dtype}; expected (N, H, W, 3) uint8",
                    file=x_path, fix="pass the original PCam x file",
                )
            check_pixels(x.shape[1], x.shape[2], file=x_path, record=f"{split} patches", error=InputError,
                         limits=self.lim)
            if y.ndim not in (1, 4) or (y.ndim == 4 and y.shape[1:] != (1, 1, 1)):
                raise InputError(
                    f"y has shape {y.shape}; expected (N, 1, 1, 1) or (N,)",
                    file=y_path, fix="pass the original PCam y file",
                )
            if x.shape[0] != y.shape[0]:
                raise InputError(
                    f"x has {x.shape[0]} patches but y has {y.shape[0]} labels",
                    file=y_path, fix="x and y must come from the same split download",
                )
            try:
                labels = np.asarray(y[...]).reshape(-1)
            except (OSError, ValueError, RuntimeError) as exc:
                raise InputError(f"cannot read the labels ({clean_message(exc)})", file=y_path,
                                 fix="the file is corrupt; re-download it") from None
            if x.shape[0] == FULL_SIZES[split]:
                self._check_md5(split, ctx)
            for i, label in enumerate(labels.tolist()):
                if label not in (0, 1):
                    ctx.bad_record(RecordError(f"label {label} is not 0/1", file=y_path, record=f"{split}[{i}]",
                                               fix="pass the original PCam y file, or pass --on-error skip"))
                    continue
                yield SourceRecord(self.name, f"{split}_{i:06d}", split, ("h5", split, i), {"label": int(label)})

    def _check_md5(self, split: str, ctx: BuildContext) -> None:
        for kind in ("x", "y"):
            path = self._uncompressed(self.h5_files[(split, kind)])
            if file_md5(path) != PUBLISHED_MD5[(split, kind)]:
                ctx.warn(f"{path.name}: MD5 differs from the published one; the file may be corrupt or altered")

    def _parquet_records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        by_split: dict[str, list[Path]] = {}
        check_one_layout(self.parquet, _MIRROR_SPLITS, source=self.name)
        for path in self.parquet:
            found = mirror_split(path, _MIRROR_SPLITS)
            if found is None:
                raise InputError(
                    "cannot tell the split of this parquet file", file=path,
                    fix="keep the mirror's names: data/{train,valid,test}-*.parquet, or the Hub's auto-converted "
                        "default/{train,valid,test}/NNNN.parquet",
                )
            split = "valid" if found == "validation" else found
            by_split.setdefault(split, []).append(path)
        for split in SPLITS:
            index = 0
            for path in by_split.get(split, []):
                labels = read_columns(path, ["label"])["label"]
                for row, label in enumerate(labels):
                    if isinstance(label, float) or label not in (True, False, 0, 1):
                        ctx.bad_record(RecordError(f"label {label!r} is not boolean", file=path, record=row,
                                                   fix="pass the mirror's files unchanged, or pass --on-error skip"))
                        index += 1
                        continue
                    yield SourceRecord(
                        self.name, f"{split}_{index:06d}", split, ("parquet", str(path), row), {"label": int(label)}
                    )
                    index += 1

    # ---- pixels ----
    def load_image(self, record: SourceRecord) -> ImagePayload:
        kind = record.locator[0]
        if kind == "parquet":
            _, path, row = record.locator
            return self._reader.image(path, row, f"{self.name}/{record.record_id}", self.lim)
        _, split, i = record.locator
        where = f"{self.name}/{record.record_id}"
        x = self._h5(split, "x")
        # Blocks are bounded in bytes too, so large declared patches cannot blow up a worker's memory.
        patch_bytes = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
        block = max(1, min(_BLOCK, self.lim.max_hdf5_block_bytes // patch_bytes))
        start = i - i % block
        key = (os.getpid(), split, start)
        if self._cache_block is None or self._cache_block[:3] != key:
            self._cache_block = None
            try:
                self._cache_block = (*key, np.asarray(x[start : start + block]))
            except (OSError, ValueError, RuntimeError, MemoryError):
                # One corrupt chunk must not take its neighbours down: read this patch alone.
                try:
                    patch = np.asarray(x[i])
                except (OSError, ValueError, RuntimeError, MemoryError) as exc:
                    raise RecordError(f"cannot read patch {i} ({clean_message(exc)})",
                                      file=self.h5_files[(split, "x")], record=where,
                                      fix="the file is corrupt; re-download it, or pass --on-error skip") from None
                return encode_array(patch, where=where)
        return encode_array(self._cache_block[3][i - start], where=where)

    def input_files(self) -> list[Path]:
        if self.parquet:
            return list(self.parquet)
        files = list(self.h5_files.values())
        for split in SPLITS:
            meta = self.path / f"camelyonpatch_level_2_split_{split}_meta.csv"
            if meta.exists():
                files.append(meta)
        return sorted(files)

    def close(self) -> None:
        if self._cache_h5:
            for value in self._cache_h5.values():
                if hasattr(value, "file"):
                    value.file.close()
        self._cache_h5 = None
        self._cache_block = None
        for path in self._unzipped.values():
            shutil.rmtree(path.parent, ignore_errors=True)
        self._unzipped = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cache_h5"] = None
        state["_cache_block"] = None
        return state
