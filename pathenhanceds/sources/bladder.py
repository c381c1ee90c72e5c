"""Pathologist-level bladder reports (Zhang et al. 2019): `Report/{train,test}_annotation.json` + images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, RecordError
from ..jsonio import load_json
from ..limits import is_valid_text
from .base import BuildContext, Source, SourceRecord, register_source

SUBSETS = ("train", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@register_source
class BladderSource(Source):
    """Reader of the pathologist-level bladder reports (source name `pathologist_level`)."""
    name = "pathologist_level"
    license = "CC-BY-NC-SA-4.0"
    description = "Bladder urothelial carcinoma images with 5 pathologist-style reports each"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self.root = self.path / "Report" if (self.path / "Report").is_dir() else self.path
        self.annotations = {s: self.root / f"{s}_annotation.json" for s in SUBSETS
                            if os.path.lexists(self.root / f"{s}_annotation.json")}
        if not self.annotations:
            raise InputError(
                "no train_annotation.json / test_annotation.json found",
                file=self.root,
                fix="point --source pathologist_level= at the folder holding Report/",
            )
        self.images = self.root / "Images"
        if not self.images.is_dir():
            raise InputError("image folder Report/Images is missing", file=self.images,
                             fix="unzip the images into Report/Images/")

    def _image_path(self, name: str, annotation: Path) -> Path | None:
        """The image of annotation key `name`; the key may not lead outside the source folder."""
        for suffix in _IMAGE_SUFFIXES:
            candidate = self.resolve(self.images, f"{name}{suffix}", file=annotation, record=name,
                                     what="annotation key")
            if os.path.lexists(candidate):  # a FIFO/folder/dangling link is reported when loaded, not skipped
                return candidate
        return None

    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self.bind(ctx)
        for subset, path in self.annotations.items():
            data = load_json(path, limits=self.lim)
            if not isinstance(data, dict):
                raise InputError(
                    f"annotation file holds a JSON {type(data).__name__}, expected an object keyed by image name",
                    file=path, fix="pass the original Report/*_annotation.json",
                )
            for name, value in data.items():
                try:
                    captions, label = self._validate(name, value, path)
                    image = self._image_path(name, path)
                    if image is None:
                        raise RecordError("image file is missing", file=self.images, record=name,
                                          fix=f"put {name}.png into Report/Images, or pass --on-error skip")
                except RecordError as err:
                    ctx.bad_record(err)
                    continue
                yield SourceRecord(self.name, name, subset, ("file", str(image)),
                                   {"captions": captions, "label": label})

    @staticmethod
    def _validate(name: str, value: object, path: Path) -> tuple[list[str], int]:
        fix = 'each entry must be {"caption": [5 strings], "label": 0|1|2|3}'
        if not is_valid_text(name):
            raise RecordError("the image name holds invalid Unicode (a lone surrogate)", file=path, record=name,
                              fix="re-download the file, or pass --on-error skip")
        if not isinstance(value, dict) or "caption" not in value or "label" not in value:
            raise RecordError("entry is not an object with 'caption' and 'label'", file=path, record=name, fix=fix)
        captions, label = value["caption"], value["label"]
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise RecordError("'caption' is not a non-empty list of strings", file=path, record=name, fix=fix)
        if not all(is_valid_text(c) for c in captions):
            raise RecordError("'caption' holds invalid Unicode (a lone surrogate)", file=path, record=name,
                              fix="re-download the file, or pass --on-error skip")
        if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1, 2, 3):
            raise RecordError(f"'label' {label!r} is not 0, 1, 2 or 3", file=path, record=name, fix=fix)
        return captions, label

    def input_files(self) -> list[Path]:
        from ..limits import is_regular

        return sorted([*self.annotations.values(), *(p for p in self.images.iterdir() if is_regular(p, self.lim))])
