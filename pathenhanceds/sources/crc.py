"""Kather CRC: CRC-VAL-HE-7K / NCT-CRC-HE-100K class folders of TIFFs, or the Hub parquet mirror."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, RecordError
from ..images import ImagePayload
from ..labels import CRC_CLASSES
from ..limits import is_regular
from .base import BuildContext, Source, SourceRecord, register_source
from .parquet_mirror import RowGroupReader, check_one_layout, mirror_split, read_columns

SUBSETS = ("CRC-VAL-HE-7K", "NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM")
CLASS_CODES = tuple(CRC_CLASSES)  # the mirror's ClassLabel order
_MIRROR_SPLITS = {"CRC_VAL_HE_7K": "CRC-VAL-HE-7K", "NCT_CRC_HE_100K": "NCT-CRC-HE-100K",
                  "NCT_CRC_HE_100K_NONORM": "NCT-CRC-HE-100K-NONORM"}
_IMAGE_SUFFIXES = {".tif", ".tiff"}


@register_source
class CRC(Source):
    """Reader of NCT-CRC-HE-100K / CRC-VAL-HE-7K (class folders of TIFFs, or the Hub parquet mirror)."""
    name = "crc"
    license = "CC-BY-4.0"
    description = "Kather et al. colorectal cancer tissue patches, 9 classes, 224x224 at 0.5 um/px"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self._reader = RowGroupReader()
        self.parquet = self.walk(suffixes={".parquet"}) if self.path.is_dir() else []
        if not self.parquet:
            self.folders = self._find_folders()

    def _find_folders(self) -> dict[str, Path]:
        if self.path.name in SUBSETS:
            return {self.path.name: self.path}
        folders = {name: self.path / name for name in SUBSETS if (self.path / name).is_dir()}
        if not folders:
            raise InputError(
                f"no CRC folder found (expected one of {', '.join(SUBSETS)} inside)",
                file=self.path,
                fix="point --source crc= at the folder holding the unzipped CRC-VAL-HE-7K / NCT-CRC-HE-100K",
            )
        return folders

    @property
    def subsets(self) -> list[str]:
        """The subsets found (CRC-VAL-HE-7K, NCT-CRC-HE-100K, ...)."""
        if self.parquet:
            return sorted({self._mirror_subset(p) for p in self.parquet})
        return sorted(self.folders)

    @staticmethod
    def _list(folder: Path) -> list[Path]:
        try:
            return sorted(folder.iterdir())
        except OSError as exc:
            raise InputError(f"cannot list folder ({exc.strerror})", file=folder,
                             fix="check the folder's permissions") from None

    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self.bind(ctx)
        if self.parquet:
            yield from self._parquet_records(ctx)
            return
        for subset, folder in sorted(self.folders.items()):
            for class_dir in (p for p in self._list(folder) if p.is_dir()):
                if class_dir.name not in CRC_CLASSES:
                    raise InputError(
                        f"unknown CRC class folder {class_dir.name!r}",
                        file=class_dir,
                        fix=f"class folders must be one of {', '.join(CLASS_CODES)}; move or remove this one",
                    )
                # Everything named like an image is a record: a folder or FIFO named `x.tif` is reported
                # as a bad record when loaded, not silently left out.
                for image in self._list(class_dir):
                    if image.suffix.lower() not in _IMAGE_SUFFIXES or image.name.startswith("."):
                        continue
                    yield SourceRecord(
                        self.name, f"{subset}/{image.stem}", subset, ("file", str(image)),
                        {"class_code": class_dir.name},
                    )

    def _mirror_subset(self, path: Path) -> str:
        key = mirror_split(path, tuple(_MIRROR_SPLITS))  # file name, or the Hub's <config>/<split>/NNNN.parquet
        if key is None:
            raise InputError(
                "cannot tell which CRC subset this parquet file holds", file=path,
                fix=f"keep the mirror's split names ({', '.join(_MIRROR_SPLITS)}) in the file names, or the Hub's "
                    "auto-converted default/<split>/NNNN.parquet folders",
            )
        return _MIRROR_SPLITS[key]

    def _parquet_records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        counters: dict[str, int] = {}
        check_one_layout(self.parquet, tuple(_MIRROR_SPLITS), source=self.name)
        for path in self.parquet:
            subset = self._mirror_subset(path)
            labels = read_columns(path, ["label"])["label"]
            for row, label in enumerate(labels):
                if isinstance(label, str) and label in CRC_CLASSES:
                    code = label
                elif isinstance(label, int) and 0 <= label < len(CLASS_CODES):
                    code = CLASS_CODES[label]
                else:
                    code = None
                index = counters.get(subset, 0)
                counters[subset] = index + 1
                if code is None:
                    ctx.bad_record(RecordError(f"unknown CRC label {label!r}", file=path, record=row,
                                               fix=f"labels must be 0..8 or one of {', '.join(CLASS_CODES)}, "
                                               "or pass --on-error skip"))
                    continue
                yield SourceRecord(self.name, f"{subset}/{index:06d}", subset, ("parquet", str(path), row),
                                   {"class_code": code})

    def load_image(self, record: SourceRecord) -> ImagePayload:
        where = f"{self.name}/{record.record_id}"
        if record.locator[0] == "parquet":
            return self._reader.image(record.locator[1], record.locator[2], where, self.lim)
        return super().load_image(record)

    def input_files(self) -> list[Path]:
        if self.parquet:
            return list(self.parquet)
        return sorted(p for folder in self.folders.values() for p in self.walk(folder, suffixes=_IMAGE_SUFFIXES)
                      if is_regular(p, self.lim))
