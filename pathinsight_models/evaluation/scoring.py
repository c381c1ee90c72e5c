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


_PRED_FIX = ('one JSON object per line: {"id": "...", "prediction": "...", "reference": "..."}'
             ' (`pathinsight eval` writes such files under predictions/)')
# field -> (allowed types, description) for the optional fields a predictions line may carry
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "prompt": ((str,), "a string"),
    "label": ((str, int), "a string"),
    "answer_type": ((str,), "a string"),
    "group": ((str, int), "a string"),
    "image": ((str, list), "a string or a list of strings"),
    "image_sha256": ((str, list), "a string or a list of strings"),
    "options": ((list,), "a list of strings"),
    "subset": ((str,), "a string"),
}


def _bad_line(path: Path, lineno: int, message: str, fix: str = _PRED_FIX) -> InputError:
    return InputError(f"line {lineno}: {message}", file=path, record=f"line {lineno}", fix=fix)


def _check_types(obj: dict[str, Any], path: Path, lineno: int) -> None:
    if isinstance(obj["id"], bool) or not isinstance(obj["id"], str | int):
        raise _bad_line(path, lineno, f'"id" must be a string, got {type(obj["id"]).__name__}')
    if obj["prediction"] is not None and not isinstance(obj["prediction"], str):
        raise _bad_line(path, lineno, f'"prediction" must be a string (or null), got {type(obj["prediction"]).__name__}')
    reference = obj.get("reference", obj.get("label"))
    if not (isinstance(reference, str) or (isinstance(reference, list) and reference
                                           and all(isinstance(r, str) for r in reference))):
        key = "reference" if "reference" in obj else "label"
        raise _bad_line(path, lineno, f'"{key}" must be a string (or a list of strings), got '
                                      f"{type(reference).__name__ if not isinstance(reference, list) else 'another list'}")
    for key, (types, what) in _FIELD_TYPES.items():
        value = obj.get(key)
        if value is None:
            continue
        ok = not isinstance(value, bool) and isinstance(value, types)
        if ok and isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise _bad_line(path, lineno, f'"{key}" must be {what}, got {type(value).__name__}')


def read_predictions(path: str | Path, task: Task | str) -> list[Item]:
    """Items from a JSONL predictions file: `id`, `prediction`, `reference` plus the task's own fields.

    Every problem (not UTF-8, not JSON, not an object, missing or mistyped fields, duplicate ids, an
    empty file) is an `InputError` naming the file, the line and the fix.
    """
    task = get_task(task) if isinstance(task, str) else task
    path = Path(path)
    if not path.is_file():
        raise InputError("predictions file not found", file=path, fix="pass a JSONL file, one JSON object per line")
    items: list[Item] = []
    seen: dict[str, int] = {}
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise InputError(f"cannot read the predictions file ({exc.strerror})", file=path, fix=_PRED_FIX) from None
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _bad_line(path, lineno, f"not valid UTF-8 (byte {exc.start} of the line)",
                            fix="save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise _bad_line(path, lineno, f"not JSON ({reason})") from None
        if not isinstance(obj, dict):
            raise _bad_line(path, lineno, f"not a JSON object (got {type(obj).__name__})")
        missing = [k for k in ("id", "prediction") if k not in obj]
        if "reference" not in obj and "label" not in obj:
            missing.append("reference")
        if missing:
            raise _bad_line(path, lineno, f"lacks {', '.join(missing)}",
                            fix='each line needs "id", "prediction" and "reference"'
                                + (f" (optional: {', '.join(task.fields)})" if task.fields else ""))
        _check_types(obj, path, lineno)
        key = str(obj["id"])
        if key in seen:
            raise _bad_line(path, lineno, f"duplicate id {key!r} (first on line {seen[key]})", fix="ids must be unique")
        seen[key] = lineno
        item: Item = {"id": key, "prediction": "" if obj["prediction"] is None else obj["prediction"],
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
        raise InputError("the predictions file has no predictions (it is empty or holds only blank lines)",
                         file=path, fix=_PRED_FIX)
    return items


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write per-item records as JSONL (one object per line) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
