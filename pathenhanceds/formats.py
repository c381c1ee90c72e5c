"""Export a built PathEnhanceDS split to the JSON + image-folder layouts other trainers read.

- `llava`: LLaVA JSON `{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}`, `<image>\\n`
  in the first human turn; images relative to the output folder (LLaVA's `--image_folder`).
- `qwen-vl`: Qwen-VL fine-tune JSON `{"id", "conversations": [{"from": "user"|"assistant", "value"}]}`,
  images inline as `Picture 1: <img>PATH</img>\\n` before the question.
- `sharegpt`: LLaMA-Factory's multimodal ShareGPT `{"messages": [{"role", "content"}], "images": [PATH]}`
  with `<image>` in the user message, plus the `dataset_info.json` entry LLaMA-Factory needs.

Images are written once per row as `images/<safe id>.<ext>` (extension from the bytes). The output is
written to a temporary folder and renamed into place, so a failed export leaves nothing behind; a
`manifest.json` (format, config, split, counts) marks it as an export that `--overwrite` may replace.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .atomic import begin_output_dir, check_output, commit_output_dir, write_marker
from .errors import InputError
from .images import sniff_format
from .layout import CARD_FILE, DEFAULT_CONFIG, split_glob
from .registry import Registry
from .schema import CONFIGS, SPLITS

_EXT = {"jpeg": "jpg", "png": "png", "tiff": "tif"}


# --------------------------------------------------------------------------------------------- reading
def _card_configs(root: Path) -> dict[str, dict[str, list[str]]]:
    """config -> split -> data file globs, from the README `configs:` section (or the default layout)."""
    card = root / CARD_FILE
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if text.startswith("---"):
            try:
                header = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError as exc:
                raise InputError(f"dataset card YAML header is invalid ({exc})", file=card,
                                 fix="rebuild the dataset, or fix README.md") from exc
            configs: dict[str, dict[str, list[str]]] = {}
            for cfg in header.get("configs") or []:
                files = cfg.get("data_files") or []
                splits: dict[str, list[str]] = {}
                for entry in files if isinstance(files, list) else []:
                    paths = entry.get("path")
                    splits[entry.get("split", "train")] = [paths] if isinstance(paths, str) else list(paths or [])
                configs[cfg.get("config_name", "default")] = splits
            if configs:
                return configs
    return {cfg: {s: [split_glob(s, None if cfg == DEFAULT_CONFIG else cfg)] for s in SPLITS} for cfg in CONFIGS}


def split_files(dataset: str | os.PathLike[str], config: str, split: str) -> list[Path]:
    """The parquet files of one config/split of a built dataset folder, in a stable order."""
    root = Path(dataset).expanduser()
    if not root.is_dir():
        raise InputError("dataset folder does not exist", file=root,
                         fix="pass the --output folder of `pathinsight data build`")
    configs = _card_configs(root)
    if config not in configs:
        raise InputError(f"dataset has no config {config!r}", file=root, fix=f"use --config {' | '.join(configs)}")
    if split not in configs[config]:
        raise InputError(f"config {config!r} has no split {split!r}", file=root,
                         fix=f"use --split {' | '.join(configs[config])}")
    files = sorted({p for pattern in configs[config][split] for p in root.glob(pattern) if p.is_file()})
    if not files:
        raise InputError(f"no parquet files for {config}/{split}", file=root,
                         fix="rebuild the dataset; its data/ folder is incomplete")
    return files


def iter_split_rows(dataset: str | os.PathLike[str], config: str, split: str) -> Iterator[dict[str, Any]]:
    """Rows (`id`, `messages`, `images`) of a built split, one parquet row group at a time.

    The files are located eagerly, so a wrong folder/config/split raises here, not on first use.
    """
    return _rows(split_files(dataset, config, split))


def _rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    for file in files:
        parquet = pq.ParquetFile(file)
        missing = {"id", "messages", "images"} - set(parquet.schema_arrow.names)
        if missing:
            raise InputError(f"parquet file lacks column(s) {', '.join(sorted(missing))}: not PathEnhanceDS rows",
                             file=file, fix="pass a dataset built by `pathinsight data build`")
        for batch in parquet.iter_batches(batch_size=64, columns=["id", "messages", "images"]):
            yield from batch.to_pylist()


# ---------------------------------------------------------------------------------------- conversion
def image_extension(data: bytes, *, where: str = "image") -> str:
    """File extension for encoded image bytes (jpg, png, tif, ...); not an image is an `InputError`."""
    kind = sniff_format(data)
    if kind:
        return _EXT[kind]
    try:
        fmt = Image.open(io.BytesIO(data)).format
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError("row holds bytes that are not an image", record=where,
                         fix="rebuild the dataset; the parquet file is damaged") from exc
    return (fmt or "bin").lower()


def safe_name(row_id: str) -> str:
    """A file-name-safe form of a row id (`pcam/train_000001/0` → `pcam__train_000001__0`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", row_id.replace("/", "__")).strip("._") or "row"


@dataclass(frozen=True)
class Turn:
    """One chat turn in a foreign format: role and text with image placeholders."""
    role: str
    text: str  # with the format's image placeholders inserted where the image parts were


def render_turns(messages: list[dict[str, Any]], image_token: Callable[[int], str], *, forbidden: str,
                 row_id: str) -> list[Turn]:
    """Flatten schema messages: image part k → `image_token(k)` (k from 0), text parts verbatim."""
    turns: list[Turn] = []
    count = 0
    for message in messages:
        pieces = []
        for part in message["content"]:
            if part["type"] == "image":
                pieces.append(image_token(count))
                count += 1
            elif part["type"] == "text":
                text = part.get("text") or ""
                if forbidden in text:
                    raise InputError(f"message text contains the image placeholder {forbidden!r}", record=row_id,
                                     fix="remove it from the text; the trainer would mistake it for an image")
                pieces.append(text)
        turns.append(Turn(message["role"], "".join(pieces)))
    return turns


def _roles(turns: list[Turn], mapping: dict[str, str], fmt: str, row_id: str) -> list[Turn]:
    out = []
    for turn in turns:
        if turn.role not in mapping:
            raise InputError(f"{fmt} has no {turn.role!r} turn", record=row_id,
                             fix="use --format sharegpt, which keeps system messages")
        out.append(Turn(mapping[turn.role], turn.text))
    return out


def _count_images(messages: list[dict[str, Any]]) -> int:
    return sum(part["type"] == "image" for m in messages for part in m["content"])


def to_llava(row_id: str, messages: list[dict[str, Any]], images: list[str]) -> dict[str, Any]:
    """One LLaVA JSON record (`id`, `image`, `conversations` with human/gpt turns)."""
    turns = render_turns(messages, lambda k: "<image>\n", forbidden="<image>", row_id=row_id)
    turns = _roles(turns, {"user": "human", "assistant": "gpt"}, "LLaVA", row_id)
    record: dict[str, Any] = {"id": row_id}
    if images:
        record["image"] = images[0] if len(images) == 1 else images
    record["conversations"] = [{"from": t.role, "value": t.text} for t in turns]
    return record


def to_qwen_vl(row_id: str, messages: list[dict[str, Any]], images: list[str]) -> dict[str, Any]:
    """One Qwen-VL fine-tune JSON record (`Picture N: <img>PATH</img>` before the question)."""
    turns = render_turns(messages, lambda k: f"Picture {k + 1}: <img>{images[k]}</img>\n", forbidden="<img>",
                         row_id=row_id)
    turns = _roles(turns, {"user": "user", "assistant": "assistant"}, "Qwen-VL", row_id)
    return {"id": row_id, "conversations": [{"from": t.role, "value": t.text} for t in turns]}


def to_sharegpt(row_id: str, messages: list[dict[str, Any]], images: list[str]) -> dict[str, Any]:
    """One LLaMA-Factory ShareGPT record (`messages` with `<image>` placeholders, `images`)."""
    turns = render_turns(messages, lambda k: "<image>", forbidden="<image>", row_id=row_id)
    return {"messages": [{"role": t.role, "content": t.text} for t in turns], "images": list(images)}


def sharegpt_dataset_info(name: str, file_name: str) -> dict[str, Any]:
    """The LLaMA-Factory `dataset_info.json` entry for a multimodal ShareGPT file."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"},
        }
    }


@dataclass(frozen=True)
class ChatFormat:
    """A foreign export format: its row converter and, for LLaMA-Factory, the dataset_info entry."""
    name: str
    description: str
    convert: Callable[[str, list[dict[str, Any]], list[str]], dict[str, Any]]
    dataset_info: Callable[[str, str], dict[str, Any]] | None = None


FORMATS: Registry[ChatFormat] = Registry("export format", fix="use --format one of: {names}")
for _format in (
    ChatFormat("llava", "LLaVA / LLaVA-Med JSON (image paths relative to --image_folder)", to_llava),
    ChatFormat("qwen-vl", "Qwen-VL fine-tune JSON (Picture N: <img>PATH</img>)", to_qwen_vl),
    ChatFormat("sharegpt", "LLaMA-Factory ShareGPT (messages + images) with dataset_info.json",
               to_sharegpt, sharegpt_dataset_info),
):
    FORMATS.register(_format.name, _format)


def list_formats() -> list[str]:
    """Names of the foreign export formats (`--format`)."""
    return FORMATS.names()


# --------------------------------------------------------------------------------------------- writing
@dataclass
class ExportResult:
    """What `export_dataset` wrote: folder, JSON data file, rows and images."""
    output: Path
    data_file: Path  # the JSON file, inside `output`
    rows: int
    images: int


def export_dataset(
    dataset: str | os.PathLike[str],
    fmt: str,
    output: str | os.PathLike[str],
    *,
    config: str = "all",
    split: str = "train",
    overwrite: bool = False,
) -> ExportResult:
    """Write `config`/`split` of the built dataset at `dataset` to `output` in chat format `fmt`."""
    chat = FORMATS.get(fmt)  # an unknown name is an InputError naming the closest one
    # Never the dataset being exported, the current directory, ...; --overwrite replaces only an earlier export.
    output = check_output(output, overwrite=overwrite, kind="export", protected=[dataset])
    rows = iter_split_rows(dataset, config, split)  # raises on a bad dataset/config/split before writing
    name = f"pathenhanceds_{config}_{split}"
    tmp = begin_output_dir(output, kind="export")
    try:
        (tmp / "images").mkdir()
        used: set[str] = set()
        n_rows = n_images = 0
        with open(tmp / f"{name}.json", "w", encoding="utf-8") as handle:
            handle.write("[")
            for row in tqdm(rows, desc=f"exporting {config}/{split} as {fmt}", unit="row"):
                paths = _write_images(tmp, row, used)
                if _count_images(row["messages"]) != len(paths):
                    raise InputError(f"row has {len(paths)} image(s) but {_count_images(row['messages'])} image "
                                     "part(s) in its messages", record=row["id"], fix="rebuild the dataset")
                record = chat.convert(row["id"], row["messages"], paths)
                handle.write(("\n" if n_rows == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
                n_rows += 1
                n_images += len(paths)
            handle.write("\n]\n")
        if n_rows == 0:
            raise InputError(f"{config}/{split} has no rows", file=dataset, fix="choose another --config/--split")
        if chat.dataset_info is not None:
            info = chat.dataset_info(name, f"{name}.json")
            (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        write_marker(tmp, "export", format=fmt, config=config, split=split, rows=n_rows, images=n_images)
        commit_output_dir(tmp, output, kind="export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(output, output / f"{name}.json", n_rows, n_images)


def _write_images(folder: Path, row: dict[str, Any], used: set[str]) -> list[str]:
    stem = safe_name(row["id"])
    if stem in used:  # two ids that sanitise alike (e.g. "a/b" and "a__b")
        stem = f"{stem}-{hashlib.sha256(row['id'].encode()).hexdigest()[:8]}"
        while stem in used:
            stem += "_"
    used.add(stem)
    paths = []
    for k, image in enumerate(row["images"] or []):
        data = (image or {}).get("bytes")
        if not data:
            raise InputError(f"image {k} of the row has no embedded bytes", record=row["id"],
                             fix="export a dataset built by `pathinsight data build` (images embedded)")
        rel = f"images/{stem if k == 0 else f'{stem}_{k}'}.{image_extension(data, where=row['id'])}"
        (folder / rel).write_bytes(data)
        paths.append(rel)
    return paths
