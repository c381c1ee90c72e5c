"""`classification`: any label set (imported data): macro and per-class P/R/F1, balanced accuracy.

Rows: config `classification`, rows whose `source` is not one of PathEnhanceDS's own (what
`pathinsight data import` writes); the prompt is the row's user turn and the reference its `label`.
The label set is `--labels a,b,c` when given, else every `label` of those rows in the dataset (all
splits), else (a predictions file) the labels/references of the items. Parser: `parsers.parse_label`
(exact, then case/punctuation-insensitive, then a unique whole-word mention; none or several ->
unparsed, counted and scored wrong, never guessed). P/R/F1 and the confusion matrix come from the
`classification` metric module; CIs from the image-level bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

from ..bootstrap import mean_stat
from ..parsers import parse_label
from . import Item, Rows, Task, TaskScore, register_task
from .common import classify, confusion_stat, extras_of, failure_reasons, macro

LABELS_FIELD = "labels"  # per item: the label set to score against (set by the runner / predictions file)
# short metric name in results.json -> the classification module's name
METRICS = {"f1": "macro_f1", "precision": "macro_precision", "recall": "macro_recall",
           "balanced_accuracy": "balanced_accuracy"}


def label_set(items: Sequence[Item]) -> list[str]:
    """The items' label set: the `labels` they carry, else their labels (or references), sorted."""
    given = next((it.get(LABELS_FIELD) for it in items if it.get(LABELS_FIELD)), None)
    if given is not None:
        if isinstance(given, str) or not all(isinstance(v, str) and v.strip() for v in given):
            raise InputError('"labels" must be a list of class names', record=items[0].get("id"),
                             fix='e.g. "labels": ["benign", "malignant"] (or pass --labels benign,malignant)')
        return list(dict.fromkeys(given))
    found = {str(it.get("label") or it.get("reference") or "").strip() for it in items}
    found.discard("")
    if not found:
        raise InputError("no labels to score against", fix="give each item a label, or pass --labels a,b,c")
    return sorted(found)


def score_classification(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Macro P/R/F1, balanced accuracy and accuracy over the dataset's own classes, unparsed answers wrong."""
    labels = label_set(items)
    parser = partial(parse_label, labels=labels)
    parsed, res, y_true, y_pred, records = classify(items, labels, parser, "dataset")
    k = len(labels)
    nan = float("nan")
    metrics = {"macro": {**{short: res.get(full, nan) for short, full in METRICS.items()},
                         "accuracy": res.get("accuracy", nan)}}
    stats = {"macro": {**{short: confusion_stat(y_true, y_pred, k, macro(full)) for short, full in METRICS.items()},
                       "accuracy": mean_stat([float(r["correct"]) for r in records])}}
    extras = {**extras_of(res), "labels": labels}
    return TaskScore(metrics, stats, records, sum(not p.ok for p in parsed), failure_reasons(parsed), extras)


def dataset_labels(data: Any, task: Task, revision: str | None = None) -> list[str]:
    """Every `label` of the task's rows in a dataset: all splits of a local folder / Hub id, or one Dataset."""
    if isinstance(data, str | Path):
        from datasets import load_dataset

        try:
            parts = list(load_dataset(str(data), task.config, revision=revision).values())
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise InputError(f"cannot load config {task.config!r} of {data}: {exc}", file=data,
                             fix="pass a dataset written by `pathinsight data import`, or --labels a,b,c") from None
    else:
        parts = [data]
    found: set[str] = set()
    for ds in parts:
        cols = ds.select_columns(["source", "task", "label"])
        for source, kind, label in zip(cols["source"], cols["task"], cols["label"], strict=True):
            if label and task.rows is not None and task.rows.reads(source) and kind == task.row_task:
                found.add(label)
    return sorted(found)


def attach_labels(items: list[Item], labels: Sequence[str]) -> list[str]:
    """Give every item the label set it is scored against; returns it (distinct, in the given order)."""
    chosen = list(dict.fromkeys(str(v).strip() for v in labels if str(v).strip()))
    if not chosen:
        raise InputError("the label set is empty", fix="pass --labels a,b,c with the class names")
    # before any generation: a reference label outside the set could never be scored
    stray = next((it for it in items if it.get("label") and str(it["label"]) not in chosen), None)
    if stray is not None:
        raise InputError(f"label {stray['label']!r} of item {stray['id']!r} is not in the label set "
                         f"({', '.join(chosen)})", record=stray["id"],
                         fix="add it to --labels (or leave --labels out to use the dataset's labels)")
    for item in items:
        item[LABELS_FIELD] = chosen
    return chosen


TASK = register_task(Task(
    name="classification",
    description="Imported data, any label set: macro and per-class P/R/F1, balanced accuracy",
    scorer=score_classification, modes=("macro",),
    headline=(("macro", "f1", "Class. F1"), ("macro", "balanced_accuracy", "Class. bal. acc")),
    max_new_tokens=32, rows=Rows("classification", "classification", (), foreign=True),
    metric_modules=("classification",), fields=("label", LABELS_FIELD),
    parsing="exact label, then case/punctuation-insensitive, then exactly one label named as whole words "
            "(negated mentions ignored); none or several -> unparsed",
    order=70,
))
