"""`crc`: CRC-VAL-HE-7K tissue typing (9 classes), macro and per-class P/R/F1 and balanced accuracy.

Rows: config `classification`, source `crc`; the prompt is the row's user turn. Parser:
`parsers.parse_crc` (class name, code, synonyms; none or several classes -> unparsed = wrong).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..bootstrap import mean_stat
from ..parsers import CRC_LABELS, parse_crc
from . import Item, Rows, Task, TaskScore, register_task
from .common import classify, confusion_stat, extras_of, failure_reasons, macro

# short metric name in results.json -> the classification module's name
METRICS = {"f1": "macro_f1", "recall": "macro_recall", "precision": "macro_precision",
           "balanced_accuracy": "balanced_accuracy"}


def score_crc(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Macro P/R/F1, balanced accuracy and accuracy over the nine classes, unparsed answers wrong."""
    parsed, res, y_true, y_pred, records = classify(items, CRC_LABELS, parse_crc, "CRC")
    k = len(CRC_LABELS)
    metrics = {"macro": {**{short: res.get(full, float("nan")) for short, full in METRICS.items()},
                         "accuracy": res.get("accuracy", float("nan"))}}
    stats = {"macro": {**{short: confusion_stat(y_true, y_pred, k, macro(full)) for short, full in METRICS.items()},
                       "accuracy": mean_stat([float(r["correct"]) for r in records])}}
    return TaskScore(metrics, stats, records, sum(not p.ok for p in parsed), failure_reasons(parsed), extras_of(res))


TASK = register_task(Task(
    name="crc", description="CRC-VAL-HE-7K tissue typing (9 classes): macro and per-class P/R/F1",
    scorer=score_crc, modes=("macro",), headline=(("macro", "f1", "CRC F1"), ("macro", "recall", "CRC recall")),
    max_new_tokens=32, rows=Rows("classification", "classification", ("crc",)), metric_modules=("classification",),
    fields=("label",),
    parsing="class full name, code (ADI..TUM), case/spacing variants and synonyms; none or several -> unparsed",
    default=True, order=10,
))
