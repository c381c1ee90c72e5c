"""Image-text pairs for contrastive training, from PathEnhanceDS rows.

- Captioning rows: the first image and the first assistant turn (the caption).
- With `class_captions`: classification rows become captions `template.format(c=synonym)`, the class
  synonyms coming from the prompt set of the row's source (`crc` -> crc100k, `pcam` -> pcam; other
  sources use the label itself), the template from `CAPTION_TEMPLATES`. Each row's choice is seeded by
  (seed, row id), so it does not depend on row order. The test split is never used for class captions.

Loaded with `datasets.load_dataset(dir_or_id, config, split=...)`; images decode on access.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.schema import message_text

# Template pool for class-name captions (ours; distinct wording from the zero-shot prompt sets is not
# required, these describe an image the way captions do).
CAPTION_TEMPLATES = (
    "an H&E image of {c}.",
    "a histopathology image showing {c}.",
    "a photomicrograph of {c}.",
    "an H&E stained patch of {c}.",
    "this tissue patch shows {c}.",
    "histology of {c}.",
    "{c}, H&E stain.",
    "a microscopy image of {c}.",
)
# Row source -> prompt set whose class synonyms name that source's labels (other sources: the set of their name).
SOURCE_PROMPT_SETS = {"crc": "crc100k", "pcam": "pcam"}


@dataclass(frozen=True)
class PairRef:
    """Where one pair's image lives (dataset index in `parts`, row index) and its text."""

    part: int
    row: int
    text: str
    row_id: str
    kind: str  # "caption" | "class"


class PairDataset:
    """A map-style dataset of `{"image": PIL.Image, "text": str, "id": str}` over one or more HF datasets."""

    def __init__(self, parts: list[Any], refs: list[PairRef]):
        self.parts, self.refs = parts, refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.refs[index]
        images = self.parts[ref.part][ref.row]["images"]
        return {"image": images[0].convert("RGB"), "text": ref.text, "id": ref.row_id}

    def counts(self) -> dict[str, int]:
        """Pairs per kind (caption / class)."""
        out: dict[str, int] = {}
        for ref in self.refs:
            out[ref.kind] = out.get(ref.kind, 0) + 1
        return out


def _load(dataset_name: str, config: str, split: str) -> Any:
    import datasets

    local = Path(dataset_name).expanduser()
    source = str(local) if local.exists() else dataset_name
    try:
        return datasets.load_dataset(source, config, split=split)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise InputError(f"cannot load split {split!r} of config {config!r}: {exc}", file=source,
                         fix="check --dataset_name / --dataset_config (captioning or all) / the split name") from exc


def caption_of(row: dict[str, Any]) -> str | None:
    """The first assistant turn's text (a captioning row's caption)."""
    for message in row["messages"]:
        if message["role"] == "assistant":
            return message_text(message).strip() or None
    return None


def class_caption(row_id: str, label: str, source: str, seed: int,
                  templates: tuple[str, ...] = CAPTION_TEMPLATES) -> str:
    """A seeded caption naming the class of a classification row (synonym x template)."""
    from pathinsight_models.clip.zeroshot import PROMPT_SETS

    synonyms = [label]
    # Imported benchmark folders (`data import --name bach`, ...) share their prompt set's name.
    name = SOURCE_PROMPT_SETS.get(source, source)
    if name and name in PROMPT_SETS and label in PROMPT_SETS.get(name).classes:
        synonyms = PROMPT_SETS.get(name).classes[label]
    rng = random.Random(f"{seed}:{row_id}")
    return rng.choice(templates).format(c=rng.choice(synonyms))


def load_pairs(
    dataset_name: str,
    config: str = "captioning",
    split: str = "train",
    *,
    class_captions: bool = False,
    seed: int = 0,
    max_samples: int | None = None,
) -> PairDataset:
    """Image-text pairs from a PathEnhanceDS directory or Hub id (see module docstring)."""
    if config not in ("captioning", "all"):
        raise InputError(f"dataset_config {config!r} has no captions", fix="use captioning or all")
    if class_captions and split == "test":
        raise InputError("class captions never come from the test split", fix="train on train (or validation)")
    parts: list[Any] = []
    refs: list[PairRef] = []
    main = _load(dataset_name, config, split)
    parts.append(main)
    task_col = main["task"] if "task" in main.column_names else ["captioning"] * len(main)
    for i, (task, row) in enumerate(zip(task_col, main.select_columns(["id", "messages"]), strict=True)):
        if task == "captioning":
            text = caption_of(row)
            if text:
                refs.append(PairRef(0, i, text, row["id"], "caption"))
    if class_captions:
        cls = main if config == "all" else _load(dataset_name, "classification", split)
        if cls is not main:
            parts.append(cls)
        part = len(parts) - 1
        columns = cls.select_columns(["id", "task", "source", "label"])
        for i, row in enumerate(columns):
            if row["task"] == "classification" and row["label"]:
                refs.append(PairRef(part, i, class_caption(row["id"], row["label"], row["source"], seed),
                                    row["id"], "class"))
    if not refs:
        raise InputError(f"no image-text pairs in split {split!r} of {config!r}", file=dataset_name,
                         fix="build PathEnhanceDS with captioning sources, or pass --class_captions true")
    if max_samples is not None and len(refs) > max_samples:
        refs = random.Random(seed).sample(refs, max_samples)
    return PairDataset(parts, refs)
