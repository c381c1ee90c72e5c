"""`pcam`: PatchCamelyon tumour detection as yes/no: accuracy, precision/recall/F1 of "yes", specificity.

Rows: config `classification`, source `pcam`. Parser: `parsers.parse_yes_no`; an unparsed answer is
wrong (a miss for recall and specificity). Every P/R/F1 comes from the `classification` metric module.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..bootstrap import mean_stat
from ..parsers import parse_yes_no
from . import Item, Rows, Task, TaskScore, register_task
from .common import classify, confusion_stat, extras_of, failure_reasons, macro, per_class

LABELS = ("yes", "no")  # index 0 is the positive class


def score_pcam(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Accuracy, P/R/F1 of "yes", specificity (= recall of "no") and macro F1."""
    parsed, res, y_true, y_pred, records = classify(items, LABELS, parse_yes_no, "yes/no")
    per = res.get("per_class", {})
    nan = float("nan")
    metrics = {"binary": {
        "accuracy": res.get("accuracy", nan),
        "f1": per.get("yes", {}).get("f1", nan),
        "precision": per.get("yes", {}).get("precision", nan),
        "recall": per.get("yes", {}).get("recall", nan),
        "specificity": per.get("no", {}).get("recall", nan),
        "macro_f1": res.get("macro_f1", nan),
    }}
    k = len(LABELS)
    stats = {"binary": {
        "accuracy": mean_stat([float(r["correct"]) for r in records]),
        **{name: confusion_stat(y_true, y_pred, k, per_class(name, 0)) for name in ("f1", "precision", "recall")},
        "specificity": confusion_stat(y_true, y_pred, k, per_class("recall", 1)),
        "macro_f1": confusion_stat(y_true, y_pred, k, macro("macro_f1")),
    }}
    return TaskScore(metrics, stats, records, sum(not p.ok for p in parsed), failure_reasons(parsed), extras_of(res))


TASK = register_task(Task(
    name="pcam", description="PatchCamelyon tumour detection (yes/no): accuracy, F1 of 'yes'",
    scorer=score_pcam, modes=("binary",), headline=(("binary", "accuracy", "PCam acc"),),
    max_new_tokens=24, rows=Rows("classification", "classification", ("pcam",)), metric_modules=("classification",),
    fields=("label",),
    parsing="first word yes/no, else a lone yes/no word, else (negated) cancer statements; otherwise unparsed",
    default=True, order=20,
))
