"""Which rows a task reads: load a PathEnhanceDS config (local build or Hub id), select, subsample.

Rows are read without their images; each item gets a loader that decodes its image only when its
generation batch runs, so a 7k-image test set never sits decoded in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pathenhanceds.errors import InputError

from .tasks import Item, Task


def _row_image(images: Any, index: int) -> Any:
    row = images[index]["images"]
    return row[0] if row else None


def load_config(data: str, config: str, split: str, revision: str | None = None) -> Any:
    """`load_dataset(data, config, split=split)`, with input errors that say what to fix."""
    from datasets import load_dataset

    try:
        return load_dataset(data, config, split=split, revision=revision)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise InputError(f"cannot load config {config!r} split {split!r} of {data}: {exc}", file=data,
                         fix="pass a PathEnhanceDS build directory or Hub id holding this task's rows "
                             "(configs: captioning, classification, vqa, conversation, all)") from None


def select_rows(ds: Any, task: Task, limit: int | None = None, seed: int = 0) -> list[int]:
    """Indices of the rows of `task` (by `source` and `task` columns); `limit` keeps whole images.

    With a limit, images (image_sha256) are drawn in a seeded random order and all their rows are
    kept while the total stays within `limit`, so captions/questions of one image stay together.
    """
    sources = list(ds["source"])
    kinds = list(ds["task"])
    wanted = [
        i for i, (s, k) in enumerate(zip(sources, kinds, strict=True))
        if (task.rows is None or task.rows.reads(s)) and (task.row_task is None or k == task.row_task)
    ]
    if limit is None or len(wanted) <= limit:
        return wanted
    shas = list(ds["image_sha256"]) if "image_sha256" in ds.column_names else [None] * len(sources)
    ids = list(ds["id"])
    groups: dict[str, list[int]] = {}
    for i in wanted:
        groups.setdefault(shas[i][0] if shas[i] else ids[i], []).append(i)
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    chosen: list[int] = []
    for j in order:
        rows = groups[keys[j]]
        if len(chosen) + len(rows) <= limit:
            chosen += rows
        if len(chosen) == limit:
            break
    if not chosen:  # every image has more rows than the limit: take part of the first one
        chosen = groups[keys[order[0]]][:limit]
    return sorted(chosen)


def items_from_dataset(ds: Any, task: Task, limit: int | None = None, seed: int = 0) -> list[Item]:
    """Items of `task` from a PathEnhanceDS dataset (`select_rows`, then the task's row -> items), images loaded lazily."""
    if task.to_items is None:
        raise InputError(f"task {task.name} does not read PathEnhanceDS rows")
    indices = select_rows(ds, task, limit, seed)
    if not indices:
        return []
    chosen = ds.select(indices)
    images = chosen.select_columns(["images"]) if "images" in chosen.column_names else None
    text = chosen.remove_columns(["images"]) if images is not None else chosen
    items: list[Item] = []
    for j, row in enumerate(text):
        for item in task.to_items(row):
            item["image"] = partial(_row_image, images, j) if images is not None else None
            items.append(item)
    return items


def data_digest(data: str | None) -> dict[str, Any]:
    """Where the data came from: the build manifest's digest for a local build directory."""
    if data is None:
        return {}
    path = Path(data)
    if path.is_dir():
        manifest = path / "manifest.json"
        info: dict[str, Any] = {"path": str(path), "kind": "local"}
        if manifest.is_file():
            try:
                info["digest"] = json.loads(manifest.read_text(encoding="utf-8")).get("digest")
            except json.JSONDecodeError:
                info["digest"] = None
        else:
            info["digest"] = None
            info["note"] = "no manifest.json (not a PathEnhanceDS build directory)"
        return info
    return {"path": data, "kind": "hub"}


def hub_revision(repo: str, revision: str | None) -> str | None:
    """Commit sha of a Hub dataset (None offline or on any error: it is provenance, not required)."""
    try:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            return None
        return HfApi().dataset_info(repo, revision=revision).sha
    except Exception:  # noqa: BLE001 - provenance is best effort
        return None


def limit_items(items: Sequence[Item], limit: int | None, seed: int) -> list[Item]:
    """Subsample items that do not come from a dataset (PathMMU), keeping whole images."""
    if limit is None or len(items) <= limit:
        return list(items)
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(str(it.get("group") or it["id"]), []).append(i)
    keys = list(groups)
    chosen: list[int] = []
    for j in np.random.default_rng(seed).permutation(len(keys)):
        if len(chosen) + len(groups[keys[j]]) <= limit:
            chosen += groups[keys[j]]
    return [items[i] for i in sorted(chosen or groups[keys[0]][:limit])]
