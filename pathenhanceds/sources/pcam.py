"""PatchCamelyon: `x`/`y` HDF5 files (plain or .h5.gz, meta CSV optional) or the Hub parquet mirror."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import InputError
from ..images import ImagePayload, encode_array
from .base import BuildContext, Source, SourceRecord, file_md5, register_source
from .parquet_mirror import RowGroupReader, read_columns

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


@register_source
class PCam(Source):
    name = "pcam"
    license = "CC0-1.0"
    description = "PatchCamelyon 96x96 lymph-node patches, label 1 = tumour in the centre 32x32"

    def __init__(self, path: str | os.PathLike[str], tmp_dir: str | None = None):
        super().__init__(path)
        self.tmp_dir = tmp_dir
        self._unzipped: dict[str, Path] = {}
        self._cache_h5: dict[str, Any] | None = None
        self._cache_block: tuple[int, str, int, np.ndarray] | None = None
        self.parquet = sorted(self.path.rglob("*.parquet")) if self.path.is_dir() else []
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
                    if candidate.exists():
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
                with gzip.open(path, "rb") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (OSError, EOFError) as exc:
                shutil.rmtree(target_dir, ignore_errors=True)
                raise InputError(f"cannot decompress ({exc})", file=path, fix="re-download the .h5.gz file") from exc
            self._unzipped[key] = target
        return self._unzipped[key]

    def _h5(self, split: str, kind: str) -> Any:
        if self._cache_h5 is None or self._cache_h5.get("pid") != os.getpid():
            self._cache_h5 = {"pid": os.getpid()}
        key = f"{split}/{kind}"
        if key not in self._cache_h5:
            path = self.h5_files[(split, kind)]
            try:
                handle = h5py.File(self._uncompressed(path), "r")
            except OSError as exc:
                raise InputError(f"not a readable HDF5 file ({exc})", file=path, fix="re-download it") from exc
            if kind not in handle:
                raise InputError(
                    f"HDF5 file has no dataset {kind!r} (has {sorted(handle.keys())})",
                    file=path,
                    fix=f"pass the original PCam {kind} file",
                )
            self._cache_h5[key] = handle[kind]
        return self._cache_h5[key]

    # ---- records ----
    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        if self.parquet:
            yield from self._parquet_records()
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
            labels = np.asarray(y[...]).reshape(-1)
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if bad.size:
                raise InputError(
                    f"label {labels[bad[0]]} is not 0/1", file=y_path, record=f"{split}[{bad[0]}]",
                    fix="pass the original PCam y file",
                )
            if x.shape[0] == FULL_SIZES[split]:
                self._check_md5(split, ctx)
            for i, label in enumerate(labels.tolist()):
                yield SourceRecord(self.name, f"{split}_{i:06d}", split, ("h5", split, i), {"label": int(label)})

    def _check_md5(self, split: str, ctx: BuildContext) -> None:
        for kind in ("x", "y"):
            path = self._uncompressed(self.h5_files[(split, kind)])
            if file_md5(path) != PUBLISHED_MD5[(split, kind)]:
                ctx.warn(f"{path.name}: MD5 differs from the published one; the file may be corrupt or altered")

    def _parquet_records(self) -> Iterator[SourceRecord]:
        by_split: dict[str, list[Path]] = {}
        for path in self.parquet:
            match = re.match(r"(train|valid|validation|test)[-_.]", path.name)
            if not match:
                raise InputError(
                    "cannot tell the split of this parquet file", file=path,
                    fix="keep the mirror's names: data/{train,valid,test}-*.parquet",
                )
            split = "valid" if match.group(1) == "validation" else match.group(1)
            by_split.setdefault(split, []).append(path)
        for split in SPLITS:
            index = 0
            for path in by_split.get(split, []):
                labels = read_columns(path, ["label"])["label"]
                for row, label in enumerate(labels):
                    if label not in (True, False, 0, 1):
                        raise InputError(f"label {label!r} is not boolean", file=path, record=row,
                                         fix="pass the mirror's files unchanged")
                    yield SourceRecord(
                        self.name, f"{split}_{index:06d}", split, ("parquet", str(path), row), {"label": int(label)}
                    )
                    index += 1

    # ---- pixels ----
    def load_image(self, record: SourceRecord) -> ImagePayload:
        kind = record.locator[0]
        if kind == "parquet":
            _, path, row = record.locator
            return self._reader.image(path, row, f"{self.name}/{record.record_id}")
        _, split, i = record.locator
        start = i - i % _BLOCK
        key = (os.getpid(), split, start)
        if self._cache_block is None or self._cache_block[:3] != key:
            x = self._h5(split, "x")
            self._cache_block = (*key, np.asarray(x[start : start + _BLOCK]))
        return encode_array(self._cache_block[3][i - start], where=f"{self.name}/{record.record_id}")

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
