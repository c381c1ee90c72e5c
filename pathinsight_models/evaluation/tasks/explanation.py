"""`explanation`: knowledge-grounded explanations (GFT) on a knowledge dataset from `pathinsight knowledge build`.

Rows: the `knowledge_stage1` and `knowledge_stage2` configs of a knowledge dataset K (a local folder)
and its tables (`K/tables/<split>.parquet`). Every image of the split gives two items, both carrying
the image's knowledge table (`table`) and their `kind`:

- `diagnosis`: the stage-1 question ("What is the diagnosis...?"); the answer's class is the one class
  of the table's classes it names (`knowledge.explain_eval.parse_diagnosis`; none or several ->
  unparsed, counted wrong). Balanced accuracy (GFT's metric), macro-F1 and accuracy from the
  `classification` metric module.
- `explanation`: the first stage-2 question (which region and nuclear features support the
  diagnosis). Scored by `knowledge.explain_eval.score_explanations`: grounding coverage (share of the
  table's top features and quadrants the answer names), grounding precision (share of the features
  and quadrants the answer names that the table holds; answers naming none are left out), and the
  diagnosis the answer states (balanced accuracy, macro-F1).

A predictions file for `pathinsight eval score --task explanation` carries per line `id`, `prediction`,
`reference`, `kind` (diagnosis | explanation), `label` and `table` (the image's row of
`K/tables/<split>.parquet` as read by `knowledge.tables.read_tables`); `pathinsight eval` writes such lines.
Not in the default task list: it needs a knowledge dataset, not the benchmark.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathenhanceds.errors import InputError

from ..bootstrap import mean_stat
from ..parsers import Parsed
from . import Item, Rows, Task, TaskScore, register_task
from .common import classify, confusion_stat, extras_of, failure_reasons, macro

KINDS = ("diagnosis", "explanation")
CONFIGS = {"diagnosis": "knowledge_stage1", "explanation": "knowledge_stage2"}
# short metric name in results.json -> the classification module's name
DIAGNOSIS_METRICS = {"balanced_accuracy": "balanced_accuracy", "f1": "macro_f1", "accuracy": "accuracy"}
_TABLE_KEYS = ("label", "classes", "top_nodes", "top_edges", "nodes", "node_density")
_TABLE_FIX = ('give each line a "table": the image\'s row of K/tables/<split>.parquet '
              "(`pathinsight eval --tasks explanation` writes such lines)")


def _table(item: Item) -> dict[str, Any]:
    table = item.get("table")
    if not isinstance(table, dict) or any(k not in table for k in _TABLE_KEYS):
        raise InputError(f"item {item.get('id')!r} has no knowledge table (needs {', '.join(_TABLE_KEYS)})",
                         record=item.get("id"), fix=_TABLE_FIX)
    return table


def _kind(item: Item) -> str:
    kind = item.get("kind")
    if kind not in KINDS:
        raise InputError(f"item {item.get('id')!r} has kind {kind!r}", record=item.get("id"),
                         fix=f'give each line a "kind": one of {", ".join(KINDS)}')
    return str(kind)


def _classes(items: Sequence[Item]) -> list[str]:
    """The class list of the tables (one GNN, one list); differing lists are an input error."""
    lists = {tuple(_table(it)["classes"]) for it in items}
    if len(lists) != 1:
        raise InputError("the items' tables list different classes", fix="score items of one knowledge dataset")
    classes = list(next(iter(lists)))
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise InputError('a table\'s "classes" must be a non-empty list of class names', fix=_TABLE_FIX)
    return classes


def _nan_to_none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def score_explanation(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Diagnosis items: balanced accuracy, macro-F1, accuracy; explanation items: grounding + stated diagnosis."""
    from pathinsight_models.knowledge.explain_eval import grounding, parse_diagnosis, score_explanations

    kinds = [_kind(it) for it in items]
    classes = _classes(items)

    def parser(text: Any) -> Parsed:
        value = parse_diagnosis(str(text or ""), classes)
        return Parsed(value, None if value else "names no class or several classes")

    metrics: dict[str, dict[str, float]] = {}
    stats: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = [{"parsed": None, "correct": None} for _ in items]
    extras: dict[str, Any] = {"classes": classes}
    failures, reasons = 0, Counter()
    for mode in modes:
        index = [i for i, k in enumerate(kinds) if k == mode]
        if not index:
            continue
        chosen = [items[i] for i in index]
        parsed, res, y_true, y_pred, recs = classify(chosen, classes, parser, "knowledge")
        diagnosis = {short: res.get(full, float("nan")) for short, full in DIAGNOSIS_METRICS.items()}
        # Units of this mode's statistics are its items: `rep` maps them to their clusters (images).
        diagnosis_stats = {short: dataclasses.replace(confusion_stat(y_true, y_pred, len(classes), macro(full)),
                                                      rep=np.asarray(index))
                           for short, full in DIAGNOSIS_METRICS.items()}
        failures += sum(not p.ok for p in parsed)
        reasons.update({f"{mode}: {k}": v for k, v in failure_reasons(parsed).items()})
        if mode == "diagnosis":
            metrics[mode], stats[mode] = diagnosis, diagnosis_stats
            extras.update(extras_of(res))
            scores = [{} for _ in chosen]
        else:
            tables = [_table(it) for it in chosen]
            answers = [str(it.get("prediction") or "") for it in chosen]
            summary = score_explanations(answers, tables, classes)
            per_item = [grounding(a, t) for a, t in zip(answers, tables, strict=True)]
            metrics[mode] = {"grounding_coverage": summary["grounding_coverage"],
                             "grounding_precision": summary["grounding_precision"],
                             "balanced_accuracy": diagnosis["balanced_accuracy"], "f1": diagnosis["f1"]}
            stats[mode] = {
                "grounding_coverage": mean_stat([_nan_to_none(g["coverage"]) for g in per_item], index),
                "grounding_precision": mean_stat([_nan_to_none(g["precision"]) for g in per_item], index),
                "balanced_accuracy": diagnosis_stats["balanced_accuracy"], "f1": diagnosis_stats["f1"],
            }
            extras["answers_naming_nothing"] = summary["answers_naming_nothing"]
            scores = [{"grounding_coverage": g["coverage"], "grounding_precision": g["precision"],
                       "named": int(g["named"])} for g in per_item]
        for i, rec, sc in zip(index, recs, scores, strict=True):
            records[i] = {**rec, **({"scores": sc} if sc else {})}
    if not metrics:
        raise InputError(f"no items of the mode(s) {', '.join(modes)}",
                         fix='each item needs "kind": diagnosis or explanation, matching --mode')
    for item, rec, kind in zip(items, records, kinds, strict=True):  # what `eval score` needs to re-score the file
        rec.update(kind=kind, table=item["table"])
    return TaskScore(metrics, stats, records, failures, dict(reasons), extras)


def read_knowledge_items(data: str | Path, *, split: str = "test", limit: int | None = None, seed: int = 0,
                         revision: str | None = None) -> tuple[list[Item], dict[str, Any]]:
    """Diagnosis and explanation items of one split of a knowledge dataset K, each with its image's table.

    `limit` keeps at most that many images (the same seeded images in both configs).
    """
    import hashlib
    import json

    from pathinsight_models.knowledge.tables import read_tables

    from ..data import items_from_dataset, load_config

    root = Path(data).expanduser()
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("name") != "PathEnhanceDS-knowledge":
        raise InputError("not a knowledge dataset (no knowledge manifest.json)", file=root,
                         fix="pass --data K written by `pathinsight knowledge build`")
    tables_path = root / "tables" / f"{split}.parquet"
    if not tables_path.is_file():
        raise InputError(f"the knowledge dataset has no tables for split {split!r}", file=tables_path,
                         fix="choose a --split the knowledge dataset has (train, validation, test)")
    tables = {t["id"]: t for t in read_tables(tables_path)}
    items: list[Item] = []
    for kind in KINDS:
        config = CONFIGS[kind]
        ds = load_config(str(root), config, split, revision)
        reader = dataclasses.replace(TASK, rows=Rows(config, config), read_items=None)
        for item in items_from_dataset(ds, reader, limit, seed):
            row_id = item["id"].rsplit("#", 1)[0]
            if row_id not in tables:
                raise InputError(f"row {row_id!r} of {config} has no table", file=tables_path, record=row_id,
                                 fix="rebuild the knowledge dataset (its tables and configs disagree)")
            item["kind"] = kind
            item["table"] = tables[row_id]
            items.append(item)
    info = {"path": str(root), "kind": "knowledge", "configs": list(CONFIGS.values()), "split": split,
            "digest": manifest.get("digest"), "rows": len({it["id"].rsplit("#", 1)[0] for it in items}),
            "tables_sha256": hashlib.sha256(tables_path.read_bytes()).hexdigest()}
    return items, info


TASK = register_task(Task(
    name="explanation",
    description="Knowledge-grounded explanations (knowledge dataset K): diagnosis balanced accuracy, "
                "grounding of the explanation in the image's table",
    scorer=score_explanation, modes=KINDS,
    headline=(("diagnosis", "balanced_accuracy", "Expl. diagnosis bal. acc"),
              ("explanation", "grounding_coverage", "Grounding coverage"),
              ("explanation", "grounding_precision", "Grounding precision")),
    max_new_tokens=96, metric_modules=("classification",), fields=("label", "kind", "table"),
    parsing="the one class of the table's classes the answer names (whole words, longest first); none or several "
            "-> unparsed; feature words and quadrants named as whole words",
    order=90, read_items=read_knowledge_items,
))
