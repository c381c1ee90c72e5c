"""PathVQA: the pvqa release (pickles + JPEGs), the Hub parquet mirror, and the textbook subset."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError, RecordError
from ..images import ImagePayload, payload_from_bytes
from ..jsonio import load_json
from ..limits import check_regular, clean_message, is_regular, is_valid_text, read_zip_member
from ..safe_pickle import load_plain_pickle
from .base import BuildContext, Source, SourceRecord, register_source
from .parquet_mirror import RowGroupReader, check_one_layout, mirror_split, read_columns

SPLITS = ("train", "val", "test")
TEXTBOOK_JSON = "QA_pairs_vb.json"
TEXTBOOK_ZIP = "textbook_of_pathology_image.zip"


def _safe_member(name: str) -> str | None:
    """The member's path inside the zip, or None if it would land outside the extraction folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        return None
    return str(path)


_MIRROR_SPLITS = ("train", "validation", "val", "test")

@register_source
class PathVQA(Source):
    """Reader of PathVQA (release pickles + images, the Hub parquet mirror, or the textbook subset)."""
    name = "pathvqa"
    license = "MIT (repository); images copyright their publishers"
    description = "Pathology visual question answering from textbooks and PEIR"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self._reader = RowGroupReader()
        self._zip_cache: Any = None
        self.pvqa = self._find_pvqa()
        self.parquet = self.walk(suffixes={".parquet"}) if self.path.is_dir() else []
        self.textbook_json = self._find_one(TEXTBOOK_JSON)
        self.textbook_zip = self._find_one(TEXTBOOK_ZIP)
        self.textbook_images = self._find_textbook_folder()
        if self.textbook_json and not (self.textbook_zip or self.textbook_images):
            raise InputError(
                f"{TEXTBOOK_JSON} found but neither {TEXTBOOK_ZIP} nor its image folder",
                file=self.textbook_json, fix=f"put {TEXTBOOK_ZIP} (or its unzipped folder) next to it",
            )
        if not (self.pvqa or self.parquet or self.textbook_json):
            raise InputError(
                "no PathVQA layout found (pvqa/qas pickles, parquet mirror, or QA_pairs_vb.json)",
                file=self.path, fix="point --source pathvqa= at the folder holding pvqa/ or the mirror's data/",
            )
        self.zip_members: dict[str, str] = self._index_zip() if self.textbook_zip else {}

    # ---- layout discovery ----
    def _find_pvqa(self) -> Path | None:
        for root in (self.path / "pvqa", self.path):
            if (root / "qas").is_dir():
                return root
        return None

    def _find_one(self, name: str) -> Path | None:
        hits = self.walk(name=name) if self.path.is_dir() else []
        return hits[0] if hits else None

    def _find_textbook_folder(self) -> Path | None:
        if not self.textbook_json:
            return None
        for candidate in (self.textbook_json.parent / "textbook_of_pathology_image",
                          self.textbook_json.parent / "images", self.path / "textbook_of_pathology_image"):
            if candidate.is_dir():
                return candidate
        return None

    def _index_zip(self) -> dict[str, str]:
        """Image id -> member name; refuses an archive with members that point outside its folder.

        A whole-archive error on purpose: such an archive is not the original, and none of it is read.
        """
        assert self.textbook_zip is not None
        check_regular(self.textbook_zip, error=InputError, limits=self.lim, root=self.path, what="zip archive")
        try:
            archive = zipfile.ZipFile(self.textbook_zip)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise InputError(f"not a readable zip ({clean_message(exc)})", file=self.textbook_zip,
                             fix="re-download it") from None
        members: dict[str, str] = {}
        with archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                safe = _safe_member(info.filename)
                if safe is None:
                    raise InputError(
                        "zip entry points outside its folder", file=self.textbook_zip, record=info.filename,
                        fix="this archive is unsafe; re-download the original from the PathVQA repository",
                    )
                stem = PurePosixPath(safe).name
                # Image ids such as "Fig.1" contain dots: strip only the real extension.
                image_id = stem[: -len(PurePosixPath(stem).suffix)] if PurePosixPath(stem).suffix else stem
                if not PurePosixPath(safe).name.startswith("._"):
                    members.setdefault(image_id, info.filename)
        return members

    # ---- records ----
    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self.bind(ctx)
        if self.pvqa:
            yield from self._pvqa_records(ctx)
        elif self.parquet:
            yield from self._parquet_records(ctx)
        if self.textbook_json:
            yield from self._textbook_records(ctx)

    def _qa(self, file: Path, index: int, item: object, keys: tuple[str, str, str]) -> tuple[str, str, str]:
        img, q, a = keys
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in keys):
            raise RecordError(f"entry is not a dict with string {img!r}, {q!r}, {a!r}", file=file, record=index,
                              fix="pass the original file")
        if not all(is_valid_text(item[k]) for k in keys):
            raise RecordError("entry holds invalid Unicode (a lone surrogate)", file=file, record=index,
                              fix="re-download the file, or pass --on-error skip")
        return item[img], item[q], item[a]

    def _pvqa_records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        assert self.pvqa is not None
        for split in SPLITS:
            file = self.pvqa / "qas" / split / f"{split}_qa.pkl"
            if not os.path.lexists(file):
                continue
            items = load_plain_pickle(file, limits=self.lim)
            if not isinstance(items, list):
                raise InputError(f"pickle holds a {type(items).__name__}, expected a list of QA dicts",
                                 file=file, fix="pass the original pvqa/qas/<split>/<split>_qa.pkl")
            for index, item in enumerate(items):
                try:
                    image, question, answer = self._qa(file, index, item, ("image", "question", "answer"))
                    image_path = self.resolve(self.pvqa / "images" / split, f"{image}.jpg", file=file,
                                              record=f"{split}[{index}]")
                    if not os.path.lexists(image_path):  # a FIFO/folder/dangling link is reported when loaded
                        raise RecordError("image file is missing", file=image_path, record=f"{split}[{index}]",
                                          fix="unzip all pvqa images, or pass --on-error skip")
                except RecordError as err:
                    ctx.bad_record(err)
                    continue
                yield SourceRecord(self.name, f"{split}/{index:06d}", split, ("file", str(image_path)),
                                   {"question": question, "answer": answer, "image_id": image})

    def _parquet_records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        counters: dict[str, int] = {}
        check_one_layout(self.parquet, _MIRROR_SPLITS, source=self.name)
        for path in self.parquet:
            found = mirror_split(path, _MIRROR_SPLITS)
            if found is None:
                raise InputError("cannot tell the split of this parquet file", file=path,
                                 fix="keep the mirror's names: data/{train,validation,test}-*.parquet, or the "
                                     "Hub's auto-converted default/{train,validation,test}/NNNN.parquet")
            split = "val" if found == "validation" else found
            # The Hub's auto-converted files are all named 0000.parquet...: keep image ids unique across splits.
            name = path.name if path.name.startswith(found) else f"{path.parent.name}/{path.name}"
            cols = read_columns(path, ["question", "answer"])
            for row, (question, answer) in enumerate(zip(cols["question"], cols["answer"], strict=True)):
                index = counters.get(split, 0)
                counters[split] = index + 1
                if not (isinstance(question, str) and isinstance(answer, str) and is_valid_text(question)
                        and is_valid_text(answer)):
                    ctx.bad_record(RecordError("'question' and 'answer' must be text", file=path, record=row,
                                               fix="pass the mirror's files unchanged, or pass --on-error skip"))
                    continue
                yield SourceRecord(self.name, f"{split}/{index:06d}", split, ("parquet", str(path), row),
                                   {"question": question, "answer": answer, "image_id": f"{name}#{row}"})

    def _textbook_records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        assert self.textbook_json is not None
        items = load_json(self.textbook_json, limits=self.lim)
        if not isinstance(items, list):
            raise InputError(f"{TEXTBOOK_JSON} holds a JSON {type(items).__name__}, expected a list",
                             file=self.textbook_json, fix="pass the original data/QA_pairs_vb.json")
        for index, item in enumerate(items):
            try:
                image_id, question, answer = self._qa(self.textbook_json, index, item,
                                                      ("Image_ID", "Questions", "Answers"))
                locator = self._textbook_locator(image_id, index)
            except RecordError as err:
                ctx.bad_record(err)
                continue
            yield SourceRecord(self.name, f"textbook/{index:06d}", "textbook", locator,
                               {"question": question, "answer": answer, "image_id": image_id})

    def _textbook_locator(self, image_id: str, index: int) -> tuple[str, str]:
        record = f"{TEXTBOOK_JSON}[{index}]"
        if self.textbook_images is not None:
            for suffix in (".jpg", ".jpeg", ".png"):
                candidate = self.resolve(self.textbook_images, f"{image_id}{suffix}", file=self.textbook_json,
                                         record=record, what="Image_ID")
                if os.path.lexists(candidate):
                    return ("file", str(candidate))
        if image_id in self.zip_members:
            return ("zip", self.zip_members[image_id])
        raise RecordError(f"image {image_id!r} not found", file=self.textbook_zip or self.textbook_images,
                          record=f"{TEXTBOOK_JSON}[{index}]", fix="use the complete archive, or pass --on-error skip")

    # ---- pixels ----
    def load_image(self, record: SourceRecord) -> ImagePayload:
        where = f"{self.name}/{record.record_id}"
        kind = record.locator[0]
        if kind == "parquet":
            return self._reader.image(record.locator[1], record.locator[2], where, self.lim)
        if kind == "zip":
            if self._zip_cache is None or self._zip_cache[0] != os.getpid():
                check_regular(self.textbook_zip, record=where, limits=self.lim, what="zip archive")
                try:
                    self._zip_cache = (os.getpid(), zipfile.ZipFile(self.textbook_zip))
                except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                    raise RecordError(f"not a readable zip ({clean_message(exc)})", file=self.textbook_zip,
                                      record=where, fix="re-download the archive") from None
            data = read_zip_member(self._zip_cache[1], record.locator[1], file=self.textbook_zip, record=where,
                                   limits=self.lim)
            return payload_from_bytes(data, where=where, file=f"{self.textbook_zip}:{record.locator[1]}")
        return super().load_image(record)

    def input_files(self) -> list[Path]:
        files: list[Path] = []
        if self.pvqa:
            files += self.walk(self.pvqa / "qas", suffixes={".pkl"})
            files += self.walk(self.pvqa / "images", suffixes={".jpg"})
        elif self.parquet:
            files += self.parquet
        for extra in (self.textbook_json, self.textbook_zip):
            if extra:
                files.append(extra)
        if self.textbook_images:
            files += list(self.textbook_images.iterdir())
        return sorted(p for p in files if is_regular(p, self.lim))
