"""Kather CRC: CRC-VAL-HE-7K / NCT-CRC-HE-100K class folders of TIFFs, or the Hub parquet mirror."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..images import ImagePayload
from ..recipes.prompts import CRC_CLASSES
from .base import BuildContext, Source, SourceRecord, register_source
from .parquet_mirror import RowGroupReader, read_columns

SUBSETS = ("CRC-VAL-HE-7K", "NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM")
CLASS_CODES = tuple(CRC_CLASSES)  # the mirror's ClassLabel order
_MIRROR_SPLITS = {"CRC_VAL_HE_7K": "CRC-VAL-HE-7K", "NCT_CRC_HE_100K": "NCT-CRC-HE-100K",
                  "NCT_CRC_HE_100K_NONORM": "NCT-CRC-HE-100K-NONORM"}
_IMAGE_SUFFIXES = {".tif", ".tiff"}


@register_source
class CRC(Source):
    name = "crc"
    license = "CC-BY-4.0"
    description = "Kather et al. colorectal cancer tissue patches, 9 classes, 224x224 at 0.5 um/px"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self._reader = RowGroupReader()
        self.parquet = sorted(self.path.rglob("*.parquet")) if self.path.is_dir() else []
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
        if self.parquet:
            return sorted({self._mirror_subset(p) for p in self.parquet})
        return sorted(self.folders)

    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        if self.parquet:
            yield from self._parquet_records()
            return
        for subset, folder in sorted(self.folders.items()):
            for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                if class_dir.name not in CRC_CLASSES:
                    raise InputError(
                        f"unknown CRC class folder {class_dir.name!r}",
                        file=class_dir,
                        fix=f"class folders must be one of {', '.join(CLASS_CODES)}; move or remove this one",
                    )
                for image in sorted(class_dir.iterdir()):
                    if image.suffix.lower() not in _IMAGE_SUFFIXES:
                        continue
                    yield SourceRecord(
                        self.name, f"{subset}/{image.stem}", subset, ("file", str(image)),
                        {"class_code": class_dir.name},
                    )

    def _mirror_subset(self, path: Path) -> str:
        for key, subset in sorted(_MIRROR_SPLITS.items(), key=lambda kv: -len(kv[0])):
            if re.match(rf"{key}[-_.]\d", path.name) or path.name.startswith(f"{key}-") or path.parent.name == key:
                return subset
        raise InputError(
            "cannot tell which CRC subset this parquet file holds", file=path,
            fix=f"keep the mirror's split names ({', '.join(_MIRROR_SPLITS)}) in the file names",
        )

    def _parquet_records(self) -> Iterator[SourceRecord]:
        counters: dict[str, int] = {}
        for path in self.parquet:
            subset = self._mirror_subset(path)
            labels = read_columns(path, ["label"])["label"]
            for row, label in enumerate(labels):
                if isinstance(label, str) and label in CRC_CLASSES:
                    code = label
                elif isinstance(label, int) and 0 <= label < len(CLASS_CODES):
                    code = CLASS_CODES[label]
                else:
                    raise InputError(f"unknown CRC label {label!r}", file=path, record=row,
                                     fix=f"labels must be 0..8 or one of {', '.join(CLASS_CODES)}")
                index = counters.get(subset, 0)
                counters[subset] = index + 1
                yield SourceRecord(self.name, f"{subset}/{index:06d}", subset, ("parquet", str(path), row),
                                   {"class_code": code})

    def load_image(self, record: SourceRecord) -> ImagePayload:
        where = f"{self.name}/{record.record_id}"
        if record.locator[0] == "parquet":
            return self._reader.image(record.locator[1], record.locator[2], where)
        return super().load_image(record)

    def input_files(self) -> list[Path]:
        if self.parquet:
            return list(self.parquet)
        return sorted(p for folder in self.folders.values() for p in folder.rglob("*")
                      if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
