"""`import_dataset`: a group's own images with labels, captions or conversations → a dataset in our layout.

    import_dataset("patches/", "my_ds", format="imagefolder")                   # class sub-folders
    import_dataset("train.json", "my_ds", format="llava", task="conversation")  # LLaVA JSON
    load_dataset("my_ds", "classification")

Input formats (the `IMPORT_FORMATS` registry, `list_import_formats()`):

- `imagefolder`: one sub-folder per class (`ADI/x.png`), optionally below split folders
  (`train/ADI/x.png`, `val/…` or `validation/…`, `test/…`) as in the `datasets` ImageFolder convention;
- `llava`: LLaVA JSON, `[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}]`, `<image>`
  in the first human turn, image paths relative to the JSON file's folder (or `image_root`);
- `sharegpt`: LLaMA-Factory ShareGPT, `[{"messages"|"conversations": [{"role", "content"}], "images": [...]}]`;
- `csv`: an image-path column plus a label, caption, or question + answer column(s).

The output is exactly what `pathinsight data build` writes (`layout`): parquet shards in the one schema
(`schema.FEATURES`) through the shared writer (`write.parquet`), a card with `configs:` and `dataset_info`,
and a manifest with the content digest, the licence, the classes, the split rule and every skipped record.
Splits come from the input (split folders, a `split` field/column) or are drawn per class (stratified) by
a permutation seeded from `seed` and the class name; all rows of one image share a split. Classification questions come from a
small pool (or `questions`) chosen per row from the seed and the row id only, so they never depend on the
label. Images are embedded as in builds: JPEG/PNG bytes as they are, other formats as lossless PNG.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from . import __version__
from .atomic import begin_output_dir, check_output, commit_output_dir, marker_fields
from .errors import InputError, RecordError
from .images import ImagePayload, payload_from_bytes, payload_from_file, sniff_format
from .jsonio import load_json
from .layout import CARD_FILE, MANIFEST_FILE, config_dir
from .limits import Limits, current, inside, open_regular, read_regular, walk_files
from .registry import Registry
from .schema import SPLITS, TASKS, answer_type_for, make_messages
from .selection.prompts import CAPTION_DETAILED
from .sources.base import BuildContext, file_md5
from .write.card import configs_yaml, dataset_info_yaml, md_cell, size_category
from .write.licenses import is_non_commercial
from .write.manifest import write_manifest
from .write.parquet import write_split

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
# Split folder / field names (lower-cased) -> our split names; the `datasets` ImageFolder aliases.
SPLIT_NAMES: dict[str, str] = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test",
}
DEFAULT_SOURCE = "imported"
DEFAULT_SPLITS = (0.8, 0.1, 0.1)
OPTIONS_PLACEHOLDER = "{options}"

# Classification questions: every row of every class draws from the same pool (seed + row id only), and
# every template lists all classes in one fixed order, so neither the choice nor the text hints at the label.
CLASSIFICATION_QUESTIONS: tuple[str, ...] = (
    "Which category does this pathology image belong to? Choose one of the following categories: {options}",
    "What type of tissue is shown in this pathology image? Answer with one of: {options}",
    "Classify this histopathology image as one of the following: {options}",
    "Which of these classes best describes this pathology image: {options}?",
)
CAPTION_QUESTIONS: tuple[str, ...] = CAPTION_DETAILED

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_LICENSE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")
_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


# ------------------------------------------------------------------------------------------- records
@dataclass
class ImportRecord:
    """One input record, before its image is read: where it came from, its image, text and label."""

    record_id: str  # unique within the input; the row id is `<source>/<record_id>`
    image: Path
    file: str  # the file to name in errors (annotation file, or the image itself)
    turns: list[tuple[str, str]] | None = None  # (role, text), when the input carries the conversation
    label: str | None = None  # class name (classification)
    caption: str | None = None  # captioning
    question: str | None = None  # vqa
    answer: str | None = None  # vqa
    split: str | None = None  # from split folders / fields
    # filled while reading images
    sha256: str = ""
    kind: str = ""  # "kept" (JPEG/PNG bytes as they are) or "converted" (stored as PNG)


@dataclass
class ReadResult:
    """What a format reader found: records, the task it implies, classes seen and input files."""

    records: list[ImportRecord]
    task: str
    classes: list[str] = field(default_factory=list)  # classification: every class named by the input
    files: list[Path] = field(default_factory=list)  # annotation files (hashed into the manifest)
    has_splits: bool = False
    root: Path | None = None  # images must lie inside this folder


@dataclass(frozen=True)
class ImportOptions:
    """Reader options: the task asked for, the image folder and the CSV column names."""

    task: str | None = None
    image_root: Path | None = None
    image_column: str | None = None
    label_column: str | None = None
    caption_column: str | None = None
    question_column: str | None = None
    answer_column: str | None = None
    split_column: str | None = None
    id_column: str | None = None


@dataclass(frozen=True)
class ImportFormat:
    """An input format: its name, one line for help texts and its reader."""

    name: str
    description: str
    read: Callable[[Path, ImportOptions, BuildContext], ReadResult]
    default_task: str


IMPORT_FORMATS: Registry[ImportFormat] = Registry("import format", fix="use --format one of: {names}")


def list_import_formats() -> list[str]:
    """Names of the input formats of `pathinsight data import --format`."""
    return IMPORT_FORMATS.names()


def _split_name(value: Any, *, file: object, record: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    name = SPLIT_NAMES.get(str(value).strip().lower())
    if name is None:
        raise RecordError(f"unknown split {value!r}", file=file, record=record,
                          fix=f"use one of: {', '.join(sorted(SPLIT_NAMES))} (or leave it empty for seeded splits)")
    return name


def _strip_image_token(text: str) -> str:
    return _IMAGE_TOKEN.sub(" ", text).strip()


# ---------------------------------------------------------------------------------------- imagefolder
def _image_files(folder: Path, limits: Limits) -> list[Path]:
    return walk_files(folder, limits=limits, suffixes=set(IMAGE_SUFFIXES))


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError as exc:
        raise InputError(f"cannot list the folder ({exc.strerror})", file=folder, fix="check its permissions") from None


def read_imagefolder(path: Path, opts: ImportOptions, ctx: BuildContext) -> ReadResult:
    """Class sub-folders (the folder name is the label), optionally below train/val(idation)/test folders."""
    if not path.is_dir():
        raise InputError("--format imagefolder needs a folder of class sub-folders", file=path,
                         fix="pass the folder holding one sub-folder per class (e.g. ADI/, TUM/)")
    task = opts.task or "classification"
    if task != "classification":
        raise InputError(f"an imagefolder holds class labels, not {task} data", file=path,
                         fix="use --task classification, or --format csv/llava/sharegpt for captions and questions")
    top = _subfolders(path)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_NAMES]
    if split_dirs and len(split_dirs) != len(top):
        others = [d.name for d in top if d not in split_dirs]
        raise InputError(f"the folder mixes split folders ({', '.join(d.name for d in split_dirs)}) with other "
                         f"folders ({', '.join(others[:5])})", file=path,
                         fix="put every class folder inside train/, validation/ (or val/) and test/, or use no "
                             "split folders at all (splits are then drawn with --splits and --seed)")
    if split_dirs:
        seen = Counter(SPLIT_NAMES[d.name.lower()] for d in split_dirs)
        twice = [s for s, n in seen.items() if n > 1]
        if twice:
            raise InputError(f"two folders name the split {twice[0]!r}", file=path,
                             fix="keep one of val/ and validation/ (or train/ and training/)")
    groups = [(SPLIT_NAMES[d.name.lower()], d) for d in split_dirs] if split_dirs else [(None, path)]
    records: list[ImportRecord] = []
    classes: set[str] = set()
    loose = 0
    for split, folder in groups:
        loose += sum(1 for p in _image_files(folder, ctx.limits) if p.parent == folder)
        class_dirs = _subfolders(folder)
        if not class_dirs:
            raise InputError("no class sub-folders found", file=folder,
                             fix="put the images of each class into a sub-folder named after the class")
        for class_dir in class_dirs:
            label = class_dir.name
            classes.add(label)
            files = _image_files(class_dir, ctx.limits)
            if not files:
                ctx.bad_record(RecordError(f"class folder {label!r} holds no images "
                                           f"({', '.join(sorted(IMAGE_SUFFIXES))})", file=class_dir,
                                           record=label,
                                           fix="add the class's images, remove the empty folder, or pass "
                                               "--on-error skip to leave the class out"))
                continue
            for file in files:
                rel = file.relative_to(path).with_suffix("").as_posix()
                records.append(ImportRecord(record_id=rel, image=file, file=str(file), label=label, split=split))
    if loose:
        ctx.note(f"{loose} image(s) directly in a split or input folder (not in a class folder) were left out")
    return ReadResult(records, task, sorted(classes), [], bool(split_dirs), path)


# ------------------------------------------------------------------------------------- JSON formats
def _json_file(path: Path, fmt: str) -> Path:
    if path.is_dir():
        found = sorted(p for p in path.glob("*.json") if p.name not in ("dataset_info.json", MANIFEST_FILE)
                       and not p.name.startswith("."))
        if len(found) != 1:
            raise InputError(f"--format {fmt} needs one JSON file; the folder holds {len(found)}", file=path,
                             fix="pass the JSON file itself as --input")
        return found[0]
    return path


def _json_records(path: Path, fmt: str, limits: Limits) -> list[Any]:
    data = load_json(path, limits=limits)
    if isinstance(data, dict):  # {"data": [...]} or one record per key
        data = data.get("data") if isinstance(data.get("data"), list) else None
    if not isinstance(data, list):
        raise InputError(f"a {fmt} file holds a JSON list of records", file=path,
                         fix=f"pass a {fmt} JSON file: [{{...}}, {{...}}]")
    return data


def _record_id(entry: dict[str, Any], index: int, path: Path) -> str:
    value = entry.get("id")
    if value is None:
        return f"{path.stem}-{index:06d}"
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise RecordError(f'"id" must be a non-empty string, got {value!r}', file=path, record=f"record {index}",
                          fix="give every record a string id, or none (then ids come from the record positions)")
    return str(value).strip()


def _image_path(value: Any, root: Path, base: Path, *, file: Path, record: str, limits: Limits) -> Path:
    if isinstance(value, list):
        if len(value) != 1:
            raise RecordError(f"record has {len(value)} images; rows hold exactly one", file=file, record=record,
                              fix="split multi-image records into one record per image, or pass --on-error skip")
        value = value[0]
    if not isinstance(value, str):
        raise RecordError("record has no image path", file=file, record=record,
                          fix="give each record an image path relative to the image folder")
    return inside(root, base, value, file=file, record=record, what="image path", limits=limits,
                  area="input folder")


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
          "bot": "assistant", "model": "assistant"}


def _turns(messages: Any, *, file: Path, record: str, role_key: str, text_key: str) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RecordError("record has no conversation turns", file=file, record=record,
                          fix=f'give a list of {{"{role_key}": ..., "{text_key}": ...}} turns')
    turns: list[tuple[str, str]] = []
    for k, turn in enumerate(messages):
        if not isinstance(turn, dict):
            raise RecordError(f"turn {k} is not an object", file=file, record=record,
                              fix=f'each turn is {{"{role_key}": ..., "{text_key}": ...}}')
        role = _ROLES.get(str(turn.get(role_key, turn.get("role", turn.get("from", "")))).lower())
        text = turn.get(text_key, turn.get("content", turn.get("value")))
        if role is None or not isinstance(text, str):
            raise RecordError(f"turn {k} has no known role or no text", file=file, record=record,
                              fix="roles are human/user, gpt/assistant or system; the text is a string")
        turns.append((role, _strip_image_token(text)))
    body = [r for r, _ in turns if r != "system"]
    if not body or body[0] != "user" or "assistant" not in body:
        raise RecordError("the conversation must start with a user turn and hold an assistant answer",
                          file=file, record=record, fix="fix the record, or pass --on-error skip")
    if any(a == b for a, b in zip(body, body[1:], strict=False)):
        raise RecordError("user and assistant turns do not alternate", file=file, record=record,
                          fix="merge consecutive turns of one speaker, or pass --on-error skip")
    if any(not text for _, text in turns if _ != "system"):
        raise RecordError("a turn has no text (besides the image token)", file=file, record=record,
                          fix="fix the record, or pass --on-error skip")
    return turns


def _chat_record(rec: ImportRecord, turns: list[tuple[str, str]], task: str, *, file: Path, record: str) -> None:
    """Fill the task fields of a record read from a chat format."""
    body = [(r, t) for r, t in turns if r != "system"]
    if task == "conversation":
        rec.turns = turns
        return
    if len(body) != 2:
        raise RecordError(f"a {task} row is one question and one answer; this record has {len(body)} turns",
                          file=file, record=record, fix="use --task conversation, or pass --on-error skip")
    question, answer = body[0][1], body[1][1]
    rec.turns = turns
    if task == "classification":
        rec.label = answer
    elif task == "vqa":
        rec.question, rec.answer = question, answer
    elif task == "captioning":
        rec.caption = answer


def _read_chat(path: Path, opts: ImportOptions, ctx: BuildContext, fmt: str) -> ReadResult:
    file = _json_file(path, fmt)
    entries = _json_records(file, fmt, ctx.limits)
    root = (opts.image_root or file.parent).absolute()
    task = opts.task or "conversation"
    records: list[ImportRecord] = []
    for index, entry in enumerate(tqdm(entries, desc=f"reading {file.name}", unit="record", leave=False,
                                       disable=len(entries) < 1000)):
        where = f"record {index}"
        try:
            if not isinstance(entry, dict):
                raise RecordError(f"record is a {type(entry).__name__}, not an object", file=file, record=where,
                                  fix=f"each {fmt} record is a JSON object")
            rid = _record_id(entry, index, file)
            where = f"record {index} (id {rid})"
            if fmt == "llava":
                image = _image_path(entry.get("image"), root, root, file=file, record=where, limits=ctx.limits)
                turns = _turns(entry.get("conversations"), file=file, record=where, role_key="from",
                               text_key="value")
            else:
                images = entry.get("images", entry.get("image"))
                image = _image_path(images, root, root, file=file, record=where, limits=ctx.limits)
                key = "messages" if "messages" in entry else "conversations"
                turns = _turns(entry.get(key), file=file, record=where, role_key="role", text_key="content")
            rec = ImportRecord(record_id=rid, image=image, file=str(file),
                               split=_split_name(entry.get("split"), file=file, record=where))
            _chat_record(rec, turns, task, file=file, record=where)
        except RecordError as err:
            ctx.bad_record(err)
            continue
        records.append(rec)
    return _file_result(records, task, file, root)


def _file_result(records: list[ImportRecord], task: str, file: Path, root: Path) -> ReadResult:
    """What one annotation file gave: its records (all naming a split or none), and its classes."""
    with_split = sum(r.split is not None for r in records)
    _check_split_fields(records, with_split, file)
    classes = sorted({r.label for r in records if r.label}) if task == "classification" else []
    return ReadResult(records, task, classes, [file], with_split > 0, root)


def _check_split_fields(records: list[ImportRecord], with_split: int, file: Path) -> None:
    if 0 < with_split < len(records):
        missing = next(r.record_id for r in records if r.split is None)
        raise InputError(f"{with_split} of {len(records)} records name a split, the others do not", file=file,
                         record=missing, fix="give every record a split (train/validation/test), or none of them")


def read_llava(path: Path, opts: ImportOptions, ctx: BuildContext) -> ReadResult:
    """LLaVA JSON: `image` + `conversations` with from human/gpt; `<image>` removed from the text."""
    return _read_chat(path, opts, ctx, "llava")


def read_sharegpt(path: Path, opts: ImportOptions, ctx: BuildContext) -> ReadResult:
    """LLaMA-Factory ShareGPT: `messages` (or `conversations`) with role/content, and `images`."""
    return _read_chat(path, opts, ctx, "sharegpt")


# ------------------------------------------------------------------------------------------------ CSV
_IMAGE_COLUMNS = ("image", "file_name", "filename", "image_path", "path", "file")


def _pick(header: list[str], wanted: str | None, candidates: Sequence[str], what: str, file: Path,
          required: bool) -> str | None:
    if wanted is not None:
        if wanted not in header:
            raise InputError(f"the CSV has no {what} column {wanted!r} (columns: {', '.join(header)})", file=file,
                             fix=f"pass the {what} column's name exactly as in the header")
        return wanted
    found = next((c for c in candidates if c in header), None)
    if found is None and required:
        raise InputError(f"the CSV has no {what} column (looked for {', '.join(candidates)}; columns: "
                         f"{', '.join(header)})", file=file, fix=f"name the column, e.g. --{what}-column NAME")
    return found


def read_csv(path: Path, opts: ImportOptions, ctx: BuildContext) -> ReadResult:
    """A CSV with a header: an image path column plus label, caption, or question + answer columns."""
    if path.is_dir():
        raise InputError("--format csv needs a CSV file", file=path, fix="pass the CSV file as --input")
    raw = open_regular(path, error=InputError, limits=ctx.limits, what="CSV file")
    previous = csv.field_size_limit(ctx.limits.max_csv_field_bytes)
    try:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise InputError(f"CSV line {reader.line_num} cannot be read ({exc}; max_csv_field_bytes is "
                             f"{ctx.limits.max_csv_field_bytes})", file=path, record=f"line {reader.line_num}",
                             fix="save the file as UTF-8 CSV with a header line") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"the CSV is not UTF-8 ({exc.reason})", file=path, fix="save the file as UTF-8") from None
    finally:
        csv.field_size_limit(previous)
        raw.close()
    if not rows:
        raise InputError("the CSV is empty", file=path, fix="add a header line and one line per image")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise InputError("the CSV header repeats a column name", file=path, fix="give every column its own name")
    image_col = _pick(header, opts.image_column, _IMAGE_COLUMNS, "image", path, True)
    label_col = _pick(header, opts.label_column, ("label", "class", "category"), "label", path, False)
    caption_col = _pick(header, opts.caption_column, ("caption", "text", "report", "description"), "caption", path,
                        False)
    question_col = _pick(header, opts.question_column, ("question",), "question", path, False)
    answer_col = _pick(header, opts.answer_column, ("answer",), "answer", path, False)
    split_col = _pick(header, opts.split_column, ("split",), "split", path, False)
    id_col = _pick(header, opts.id_column, ("id",), "id", path, False)
    task = opts.task or ("classification" if label_col else "captioning" if caption_col
                         else "vqa" if question_col and answer_col else None)
    needed = {"classification": [("label", label_col)], "captioning": [("caption", caption_col)],
              "vqa": [("question", question_col), ("answer", answer_col)]}.get(task or "", [])
    if task is None or task == "conversation" or any(col is None for _, col in needed):
        what = ", ".join(name for name, col in needed if col is None) or "label, caption or question+answer"
        raise InputError(f"the CSV has no {what} column for {task or 'any'} rows (columns: {', '.join(header)})",
                         file=path, fix="add the column, name it with --label-column/--caption-column, or use "
                                        "--format llava/sharegpt for conversations")
    root = (opts.image_root or path.parent).absolute()
    index = {name: i for i, name in enumerate(header)}
    records: list[ImportRecord] = []
    for lineno, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {lineno}"

        def cell(column: str | None, row: list[str] = row) -> str | None:
            if column is None or index[column] >= len(row):
                return None
            value = row[index[column]].strip()
            return value or None

        try:
            if len(row) != len(header):
                raise RecordError(f"line has {len(row)} fields, the header {len(header)}", file=path, record=where,
                                  fix="quote fields that contain commas, or pass --on-error skip")
            image = _image_path(cell(image_col), root, root, file=path, record=where, limits=ctx.limits)
            rid = cell(id_col) or Path(cell(image_col) or "").with_suffix("").as_posix()
            rec = ImportRecord(record_id=rid, image=image, file=str(path),
                               split=_split_name(cell(split_col), file=path, record=where))
            if task == "classification":
                rec.label = cell(label_col)
            elif task == "captioning":
                rec.caption = cell(caption_col)
            else:
                rec.question, rec.answer = cell(question_col), cell(answer_col)
            if not (rec.label or rec.caption or (rec.question and rec.answer)):
                raise RecordError(f"line has an empty {', '.join(name for name, _ in needed)}", file=path,
                                  record=where, fix="fill the cell, or pass --on-error skip")
        except RecordError as err:
            ctx.bad_record(err)
            continue
        records.append(rec)
    return _file_result(records, task, path, root)


for _fmt in (
    ImportFormat("imagefolder", "class sub-folders (optionally below train/ val/ test/)", read_imagefolder,
                 "classification"),
    ImportFormat("llava", "LLaVA JSON: image + conversations (human/gpt), <image> token", read_llava, "conversation"),
    ImportFormat("sharegpt", "LLaMA-Factory ShareGPT: messages (role/content) + images", read_sharegpt,
                 "conversation"),
    ImportFormat("csv", "CSV: image path column + label, caption, or question and answer columns", read_csv,
                 "classification"),
):
    IMPORT_FORMATS.register(_fmt.name, _fmt)


# ------------------------------------------------------------------------------------------- splits
def _rng(seed: int, *salt: str) -> np.random.Generator:
    digest = hashlib.sha256("/".join((str(seed), *salt)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split `n` units over fractions (largest remainder); when `n` allows, every positive fraction gets one."""
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(records: list[ImportRecord], fractions: Sequence[float], seed: int, stratify: bool) -> None:
    """Seeded, per-class (stratified) split of the records' images; all rows of one image share a split.

    Only the seed, the class names and the image hashes decide: the input order does not matter.
    """
    units: dict[str, list[ImportRecord]] = {}
    for rec in sorted(records, key=lambda r: r.record_id):
        units.setdefault(rec.sha256, []).append(rec)
    strata: dict[str, list[str]] = {}
    for sha, recs in units.items():
        strata.setdefault(recs[0].label or "" if stratify else "", []).append(sha)
    for stratum, shas in sorted(strata.items()):
        shas = sorted(shas)
        order = _rng(seed, "split", stratum).permutation(len(shas))
        counts = allocate(len(shas), fractions)
        start = 0
        for split, count in zip(SPLITS, counts, strict=True):
            for j in order[start:start + count]:
                for rec in units[shas[j]]:
                    rec.split = split
            start += count


def parse_splits(value: str | Sequence[float]) -> tuple[float, float, float]:
    """`"0.8,0.1,0.1"` (or three numbers) -> train/validation/test fractions that sum to 1."""
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 3 or any(not math.isfinite(p) or p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6 \
            or parts[0] <= 0:
        raise InputError(f"--splits must be three fractions train,validation,test summing to 1, got {value!r}",
                         fix="e.g. --splits 0.8,0.1,0.1 (train above 0; 0 leaves a split out)")
    return parts[0], parts[1], parts[2]


# ------------------------------------------------------------------------------------------- rows
def _options_text(classes: Sequence[str]) -> str:
    return ", ".join(f"'{c}'" for c in classes)


def _question(pool: Sequence[str], seed: int, record_id: str, classes: Sequence[str]) -> str:
    template = pool[int(_rng(seed, "question", record_id).integers(len(pool)))]
    return template.replace(OPTIONS_PLACEHOLDER, _options_text(classes))


def row_turns(rec: ImportRecord, task: str, *, seed: int, classes: Sequence[str],
              questions: Sequence[str] | None) -> list[tuple[str, str]]:
    """The (role, text) turns of a record's row; questions drawn from the seed and the record id only."""
    if task == "classification":
        if questions is None and rec.turns is not None:  # chat input: keep its own question
            return rec.turns
        return [("user", _question(questions or CLASSIFICATION_QUESTIONS, seed, rec.record_id, classes)),
                ("assistant", str(rec.label))]
    if task == "captioning":
        if questions is None and rec.turns is not None:
            return rec.turns
        return [("user", _question(questions or CAPTION_QUESTIONS, seed, rec.record_id, classes)),
                ("assistant", str(rec.caption))]
    if task == "vqa" and rec.turns is None:
        return [("user", str(rec.question)), ("assistant", str(rec.answer))]
    assert rec.turns is not None
    return rec.turns


def _check_questions(questions: Sequence[str] | None) -> list[str] | None:
    if questions is None:
        return None
    cleaned = [q.strip() for q in questions]
    if not cleaned or any(not q for q in cleaned):
        raise InputError("--question must be a non-empty text", fix='e.g. --question "What tissue is this? {options}"')
    return list(dict.fromkeys(cleaned))


# ------------------------------------------------------------------------------------------- result
@dataclass
class ImportResult:
    """What `import_dataset` wrote: folder, counts (config -> split -> source -> rows), digest, manifest."""

    output: Path
    counts: dict[str, dict[str, dict[str, int]]]
    digest: str
    manifest: dict[str, Any]


def import_dataset(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: str,
    task: str | None = None,
    questions: Sequence[str] | None = None,
    splits: str | Sequence[float] = DEFAULT_SPLITS,
    seed: int = 0,
    license: str = "other",
    on_error: str = "fail",
    overwrite: bool = False,
    name: str = DEFAULT_SOURCE,
    image_root: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    caption_column: str | None = None,
    question_column: str | None = None,
    answer_column: str | None = None,
    split_column: str | None = None,
    id_column: str | None = None,
    limits: Limits | None = None,
) -> ImportResult:
    """Import `input` (in `format`) into `output` as a dataset in our layout; see the module docstring.

    Bad input is an `InputError` naming the file, record and fix; a bad record (unreadable image, image path
    outside the input folder, duplicate id, empty class folder) is a `RecordError`, which `on_error="skip"`
    turns into an entry of the manifest's and the card's skipped list. Fewer than two classes is always an
    error for classification. Writes beside `output` and renames at the end: a failed import leaves nothing.
    """
    fmt = IMPORT_FORMATS.get(format)
    if task is not None and task not in TASKS:
        raise InputError(f"unknown task {task!r}", fix=f"use --task one of: {', '.join(TASKS)}")
    if on_error not in ("fail", "skip"):
        raise InputError(f"--on-error must be fail or skip, not {on_error!r}", fix="pass --on-error fail|skip")
    if not _NAME_RE.match(name):
        raise InputError(f"source name {name!r} is not a short lower-case name", fix="e.g. --name my_lab_crc")
    from .sources import list_sources

    if name in list_sources():
        raise InputError(f"source name {name!r} is one of PathEnhanceDS's own sources", fix="choose another --name")
    lic = str(license).strip().lower()
    if not _LICENSE_RE.match(lic):
        raise InputError(f"licence {license!r} is not a licence id", fix="e.g. --license cc-by-4.0 (or other)")
    fractions = parse_splits(splits)
    questions = _check_questions(questions)
    source = Path(input).expanduser()
    if not os.path.lexists(source):
        raise InputError("the input does not exist", file=input, fix="pass the folder or file to import as --input")
    root_opt = Path(image_root).expanduser() if image_root is not None else None
    if root_opt is not None and not root_opt.is_dir():
        raise InputError("the image folder does not exist", file=image_root, fix="pass the folder holding the images")
    target = check_output(output, overwrite=overwrite, kind="import", protected=[source, root_opt])
    ctx = BuildContext(on_error=on_error, limits=limits or current())
    opts = ImportOptions(task=task, image_root=root_opt, image_column=image_column, label_column=label_column,
                         caption_column=caption_column, question_column=question_column, answer_column=answer_column,
                         split_column=split_column, id_column=id_column)
    read = fmt.read(source, opts, ctx)
    task = read.task
    records = _dedupe(read.records, ctx)
    records = _read_images(records, read.root or source, ctx)
    classes = _check_classes(records, read, ctx, source) if task == "classification" else []
    if not records:
        raise InputError("nothing to import: no readable records", file=input,
                         fix="check --format and the input; skipped records are listed above")
    if read.has_splits:
        split_rule = "from the input (split folders or fields)"
    else:
        assign_splits(records, fractions, seed, stratify=task == "classification")
        split_rule = (f"seeded {'stratified ' if task == 'classification' else ''}split "
                      f"{'/'.join(f'{f:g}' for f in fractions)} of images (seed {seed})")
    _split_warnings(records, classes, ctx)
    tmp = begin_output_dir(target, kind="import")
    try:
        manifest = _write(tmp, target, records, task=task, classes=classes, questions=questions, seed=seed,
                          source_name=name, license=lic, fmt=fmt.name, read=read, input_path=source,
                          split_rule=split_rule, fractions=fractions, ctx=ctx)
        commit_output_dir(tmp, target, kind="import")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(target, manifest["counts"], manifest["digest"], manifest)


def _dedupe(records: list[ImportRecord], ctx: BuildContext) -> list[ImportRecord]:
    seen: dict[str, ImportRecord] = {}
    kept = []
    for rec in records:
        if rec.record_id in seen:
            ctx.bad_record(RecordError(f"duplicate id {rec.record_id!r} (first: image {seen[rec.record_id].image.name})",
                                       file=rec.file, record=rec.record_id,
                                       fix="give every record its own id, or pass --on-error skip to keep the first"))
            continue
        seen[rec.record_id] = rec
        kept.append(rec)
    return kept


def _read_images(records: list[ImportRecord], root: Path, ctx: BuildContext) -> list[ImportRecord]:
    """Validate every image (decoded once, pixel limits checked) and note its hash; the bytes are not kept."""
    kept = []
    root = root if root.is_dir() else root.parent
    for rec in tqdm(records, desc="reading images", unit="image", disable=len(records) < 200):
        try:
            data = read_regular(rec.image, max_bytes=ctx.limits.max_image_bytes, limit_name="max_image_bytes",
                                record=rec.record_id, limits=ctx.limits, root=root, what="image file")
            payload = payload_from_bytes(data, where=rec.record_id, file=rec.image)
        except RecordError as err:
            ctx.bad_record(err)
            continue
        # "kept": stored byte for byte (JPEG/PNG), so the write pass need not decode it again
        rec.sha256, rec.kind = payload.sha256, "kept" if sniff_format(data) in ("jpeg", "png") else "converted"
        kept.append(rec)
    return kept


def _check_classes(records: list[ImportRecord], read: ReadResult, ctx: BuildContext, source: Path) -> list[str]:
    present = Counter(r.label for r in records)
    for label in sorted(set(read.classes) - set(present)):
        if label is not None and not any(s["record"] == label for s in ctx.skipped):
            ctx.bad_record(RecordError(f"class {label!r} has no readable images", file=source, record=label,
                                       fix="add images of this class, or pass --on-error skip to leave it out"))
    classes = sorted(label for label in present if label)
    if len(classes) < 2:
        raise InputError(f"classification needs at least two classes; the input has {len(classes)}"
                         + (f" ({classes[0]!r})" if classes else ""), file=source,
                         fix="add a folder (or label) per class with its images")
    return classes


def _split_warnings(records: list[ImportRecord], classes: list[str], ctx: BuildContext) -> None:
    by_split = {s: Counter(r.label for r in records if r.split == s) for s in SPLITS}
    for split in SPLITS:
        if not by_split[split]:
            continue
        missing = [c for c in classes if not by_split[split][c]]
        if missing:
            ctx.warn(f"split {split} has no rows of class(es) {', '.join(missing)}")
    shas: dict[str, set[str]] = {}
    for rec in records:
        shas.setdefault(rec.sha256, set()).add(rec.split or "")
    leaked = sum(1 for s in shas.values() if len(s) > 1)
    if leaked:
        ctx.warn(f"{leaked} image(s) appear in more than one split of the input")


def _payload(rec: ImportRecord, root: Path, limits: Limits) -> ImagePayload:
    """The record's image bytes again (kept as-is for JPEG/PNG), checked against the first read's hash."""
    if rec.kind == "kept":
        data = read_regular(rec.image, max_bytes=limits.max_image_bytes, limit_name="max_image_bytes",
                            record=rec.record_id, limits=limits, root=root, what="image file")
        payload = ImagePayload(data, sniff_format(data) or "")
    else:
        payload = payload_from_file(rec.image, where=rec.record_id, root=root, limits=limits)
    if payload.sha256 != rec.sha256:
        raise InputError("the image changed while it was being imported", file=rec.image, record=rec.record_id,
                         fix="do not change the input during an import; run it again")
    return payload


def _write(tmp: Path, target: Path, records: list[ImportRecord], *, task: str, classes: list[str],
           questions: list[str] | None, seed: int, source_name: str, license: str, fmt: str, read: ReadResult,
           input_path: Path, split_rule: str, fractions: Sequence[float], ctx: BuildContext) -> dict[str, Any]:
    root = read.root or (input_path if input_path.is_dir() else input_path.parent)
    digest = hashlib.sha256()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    files: list[str] = []
    bar = tqdm(total=len(records), desc="writing rows", unit="row", disable=len(records) < 200)

    def rows(split: str) -> Iterator[dict[str, Any]]:
        for rec in sorted((r for r in records if r.split == split), key=lambda r: r.record_id):
            payload = _payload(rec, root, ctx.limits)
            turns = row_turns(rec, task, seed=seed, classes=classes, questions=questions)
            answer = next((t for r, t in reversed(turns) if r == "assistant"), "")
            bar.update(1)
            yield {
                "id": f"{source_name}/{rec.record_id}",
                "source": source_name,
                "task": task,
                "images": [{"bytes": payload.data, "path": None}],
                "messages": make_messages(turns),
                "label": rec.label if task == "classification" else None,
                "answer_type": answer_type_for(answer) if task == "vqa" else None,
                "image_sha256": [payload.sha256],
                "license": license,
            }

    for split in SPLITS:
        result = write_split(rows(split), config_dir(tmp, task), split, digest)
        if result.rows:
            counts.setdefault(task, {})[split] = result.by_source
        files += [f.relative_to(tmp).as_posix() for f in result.files]
    bar.close()
    input_files = [*read.files, *sorted({r.image for r in records})]
    entries = [{"path": _relative(p, root, input_path), "size": p.stat().st_size} for p in read.files]
    listing = "\n".join(f"{_relative(p, root, input_path)}\t{r.sha256}" for p, r in
                        sorted(((r.image, r) for r in records), key=lambda pr: str(pr[0])))
    per_class = {c: {s: sum(1 for r in records if r.split == s and r.label == c) for s in SPLITS} for c in classes}
    skipped = [{**s, "file": _relative(Path(s["file"]), root, input_path) if s["file"] else ""}
               for s in ctx.skipped]
    manifest: dict[str, Any] = {
        "name": target.name,
        "library_version": __version__,
        "generator": marker_fields("import")["generator"],  # lets --overwrite recognise this import
        "recipe": f"import-{fmt}",  # what `pathinsight data stats` prints
        "format": fmt,
        "task": task,
        "source": source_name,
        "seed": seed,
        "splits": {"rule": split_rule, "fractions": dict(zip(SPLITS, fractions, strict=True)),
                   "from_input": read.has_splits},
        "labels": classes,
        "class_counts": per_class,
        "questions": _questions_used(task, questions, records),
        "digest": digest.hexdigest(),
        "counts": counts,
        "files": sorted(files),
        "inputs": {"format": fmt, "files": entries, "images": len(input_files) - len(read.files),
                   "image_listing_sha256": hashlib.sha256(listing.encode()).hexdigest(),
                   "annotation_md5": {_relative(p, root, input_path): file_md5(p) for p in read.files}},
        "skipped": skipped,
        "notes": ctx.notes,
        "warnings": ctx.warnings,
        "license": license,
    }
    write_manifest(tmp / MANIFEST_FILE, manifest)
    sizes = {f: (tmp / f).stat().st_size for f in files}
    (tmp / CARD_FILE).write_text(render_import_card(manifest, sizes, target.name), encoding="utf-8")
    return manifest


def _questions_used(task: str, questions: list[str] | None, records: list[ImportRecord]) -> list[str] | None:
    """The question pool the rows drew from (None when the input's own questions were kept)."""
    if task not in ("classification", "captioning") or (questions is None and any(r.turns for r in records)):
        return None
    return list(questions or (CLASSIFICATION_QUESTIONS if task == "classification" else CAPTION_QUESTIONS))


def _relative(path: Path, root: Path, input_path: Path) -> str:
    """Paths in the manifest never hold local absolute paths (they leak user names)."""
    for base in (root, input_path if input_path.is_dir() else input_path.parent):
        try:
            return path.absolute().relative_to(base.absolute()).as_posix()
        except ValueError:
            continue
    return path.name


# --------------------------------------------------------------------------------------------- card
def render_import_card(manifest: dict[str, Any], file_sizes: dict[str, int], load_path: str) -> str:
    """The dataset card (README.md) of an import: YAML `configs:` + `dataset_info`, counts, classes, skips."""
    counts = manifest["counts"]
    total = sum(n for splits in counts.values() for by_src in splits.values() for n in by_src.values())
    task = manifest["task"]
    categories = {"classification": "image-classification", "captioning": "image-to-text",
                  "vqa": "visual-question-answering", "conversation": "image-text-to-text"}
    header = {
        "pretty_name": manifest["name"],
        "license": manifest["license"],
        "language": ["en"],
        "task_categories": ["image-text-to-text", categories[task]] if task != "conversation" else ["image-text-to-text"],
        "tags": ["histopathology", "pathology", "vision-language", "pathinsight-import"],
        "size_categories": [size_category(total)],
        "configs": configs_yaml({cfg: sorted(splits) for cfg, splits in counts.items()}),
        "dataset_info": dataset_info_yaml(counts, file_sizes),
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {md_cell(manifest['name'])}", "",
             f"Imported with `pathinsight data import --format {manifest['format']}` (pathinsight "
             f"{manifest['library_version']}) into the PathEnhanceDS schema: one image plus a conversation in TRL's "
             "conversational format per row.", "",
             "> **Not for clinical use.** Research data: models trained on it must not be used to diagnose, treat "
             "or triage patients.", "",
             "## Loading", "", "```python", "from datasets import load_dataset", "",
             f'ds = load_dataset("{load_path}", "{task}")  # or "all"', "```", "",
             "## Counts", "", "| config | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
    for cfg, splits in counts.items():
        lines.append(f"| {cfg} | " + " | ".join(str(sum(splits.get(s, {}).values())) for s in SPLITS) + " |")
    lines += ["", f"- Splits: {manifest['splits']['rule']}.", f"- Seed: `{manifest['seed']}`",
              f"- Row `source`: `{manifest['source']}`; licence: `{manifest['license']}`"
              + (" (**non-commercial**)" if is_non_commercial([manifest["license"]]) else ""),
              f"- Content digest (sha256 over all rows): `{manifest['digest']}`", ""]
    if manifest["labels"]:
        lines += ["## Classes", "", "| class | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
        for label, by_split in manifest["class_counts"].items():
            lines.append(f"| {md_cell(label)} | " + " | ".join(str(by_split[s]) for s in SPLITS) + " |")
        lines.append("")
    if manifest["questions"]:
        lines += ["## Questions", "", "Each row's question is drawn from this pool by the seed and the row id only "
                  "(never by its label); `{options}` lists every class in the order above.", ""]
        lines += [f"- {md_cell(q)}" for q in manifest["questions"]] + [""]
    for title, entries in (("Warnings", manifest["warnings"]), ("Notes", manifest["notes"])):
        if entries:
            lines += [f"## {title}", ""] + [f"- {md_cell(e)}" for e in entries] + [""]
    lines += ["## Skipped records", ""]
    skipped = manifest["skipped"]
    if skipped:
        lines += [f"{len(skipped)} record(s) were skipped (`--on-error skip`):", "", "| file | record | reason |",
                  "|---|---|---|"]
        lines += [f"| {md_cell(s['file'])} | {md_cell(s['record'])} | {md_cell(s['reason'])} |" for s in skipped[:100]]
        if len(skipped) > 100:
            lines.append(f"| … | {len(skipped) - 100} more in manifest.json | |")
    else:
        lines.append("None.")
    lines += ["", "## Schema", "", "The PathEnhanceDS row schema: `id` (`<source>/<record id>`), `source`, `task`, "
              "`images` (JPEG/PNG bytes as imported, other formats as lossless PNG), `messages`, `label` (class name "
              "for classification rows), `answer_type` (closed/open for VQA rows), `image_sha256`, `license`.", ""]
    return "\n".join(lines)


__all__ = ["CAPTION_QUESTIONS", "CLASSIFICATION_QUESTIONS", "IMPORT_FORMATS", "ImportFormat", "ImportRecord",
           "ImportResult", "allocate", "assign_splits", "import_dataset", "list_import_formats", "parse_splits",
           "row_turns"]
