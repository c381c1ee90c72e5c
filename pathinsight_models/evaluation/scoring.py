"""Score items of one task: metrics per mode, parse failures, bootstrap CIs, per-item records.

Used by the runner (after generation), by `pathinsight eval score` (predictions from anywhere) and,
without bootstrap, by the training callback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

from .bootstrap import bootstrap, cluster_index
from .metrics import describe
from .tasks import Item, Task, get_task

RECORD_FIELDS = ("label", "answer_type", "options", "subset", "group", "turn")


def _clean(value: Any) -> Any:
    """JSON-safe floats (NaN -> None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def score_items(
    task: Task | str,
    items: list[Item],
    modes: Sequence[str] | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(task result for results.json, per-item prediction records)."""
    task = get_task(task) if isinstance(task, str) else task
    if not items:
        raise InputError(f"no items to score for task {task.name}",
                         fix="check --split/--limit and that the data holds rows of this task")
    scored = task.score(items, modes)
    clusters, n_clusters = cluster_index([str(it.get("group") or it["id"]) for it in items])
    by_image = n_clusters < len(items) or any(it.get("group") for it in items)
    metrics: dict[str, dict[str, Any]] = {}
    for mode, values in scored.metrics.items():
        cis = bootstrap(scored.stats.get(mode, {}), clusters, n_resamples, seed, confidence)
        metrics[mode] = {
            name: {"value": value, "ci": list(cis[name]) if cis.get(name) else None} for name, value in values.items()
        }
    result = {
        "task": task.name,
        "description": task.description,
        "n": len(items),
        "parse_failures": scored.parse_failures,
        "parse_failure_reasons": scored.failure_reasons,
        "parsing": task.parsing,
        "modes": list(scored.metrics),
        "metrics": metrics,
        "headline": [{"mode": m, "metric": k, "label": label} for m, k, label in task.headline if m in scored.metrics],
        "metric_modules": describe(list(task.metric_modules)),
        "bootstrap": {"method": "percentile", "unit": "image" if by_image else "item", "n_units": n_clusters,
                      "n_resamples": n_resamples, "seed": seed, "confidence": confidence},
        "extras": scored.extras,
    }
    records = []
    for item, rec in zip(items, scored.records, strict=True):
        row = {"id": item["id"], "prompt": item.get("prompt"), "prediction": item.get("prediction"),
               "reference": item.get("reference"), **rec}
        row.update({k: item[k] for k in RECORD_FIELDS if item.get(k) is not None})
        records.append(row)
    return _clean(result), _clean(records)


def read_predictions(path: str | Path, task: Task | str) -> list[Item]:
    """Items from a JSONL predictions file: `id`, `prediction`, `reference` plus the task's own fields."""
    task = get_task(task) if isinstance(task, str) else task
    path = Path(path)
    if not path.is_file():
        raise InputError("predictions file not found", file=path, fix="pass a JSONL file, one JSON object per line")
    items: list[Item] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"line {lineno} is not JSON ({exc.msg})", file=path, record=lineno,
                                 fix="one JSON object per line") from None
            if not isinstance(obj, dict):
                raise InputError(f"line {lineno} is not a JSON object", file=path, record=lineno)
            missing = [k for k in ("id", "prediction") if k not in obj]
            if "reference" not in obj and "label" not in obj:
                missing.append("reference")
            if missing:
                raise InputError(f"line {lineno} lacks {', '.join(missing)}", file=path, record=obj.get("id", lineno),
                                 fix='each line needs "id", "prediction" and "reference"'
                                     + (f" (optional: {', '.join(task.fields)})" if task.fields else ""))
            key = str(obj["id"])
            if key in seen:
                raise InputError(f"duplicate id {key!r}", file=path, record=lineno, fix="ids must be unique")
            seen.add(key)
            item: Item = {"id": key, "prediction": "" if obj["prediction"] is None else str(obj["prediction"]),
                          "reference": obj.get("reference", obj.get("label")), "prompt": obj.get("prompt")}
            for k in (*task.fields, "group", "image", "image_sha256", "label", "answer_type"):
                if obj.get(k) is not None:
                    item[k] = obj[k]
            if "group" not in item:  # cluster by image when the file says which image an item is about
                img = item.get("image_sha256") or item.get("image")
                if img:
                    item["group"] = img[0] if isinstance(img, list) else str(img)
            items.append(item)
    if not items:
        raise InputError("the predictions file is empty", file=path)
    return items


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
