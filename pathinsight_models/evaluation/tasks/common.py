"""Scoring helpers shared by task modules: class references, classification bookkeeping, text metrics.

P/R/F1 and confusion matrices come from the `classification` metric module only; BLEU-1 and ROUGE
from theirs. Nothing here knows a particular task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pathenhanceds.errors import InputError

from ..bootstrap import Stat, mean_stat
from ..metrics import bleu1, classification, rouge
from ..parsers import Parsed
from . import Item

# Per-class extras a classification task reports (and the runner draws a confusion PNG from).
CLASSIFICATION_EXTRAS = ("per_class", "confusion_matrix", "confusion_labels")


def reference_class(item: Item, labels: Sequence[str], parser: Callable[[str], Parsed], task: str) -> str:
    """The item's reference class: its `label` if it is one of `labels`, else its parsed reference."""
    label = item.get("label")
    if label in labels:
        return str(label)
    parsed = parser(str(label if label else item.get("reference", "")))
    if parsed.value not in labels:
        raise InputError(f"the reference of item {item.get('id')!r} is not a {task} class",
                         record=item.get("id"), fix=f"give `reference` or `label` as one of: {', '.join(labels)}")
    return str(parsed.value)


def failure_reasons(parsed: list[Parsed]) -> dict[str, int]:
    """How often each parse-failure reason occurred."""
    return dict(Counter(p.reason for p in parsed if p.reason))


def classify(items: list[Item], labels: Sequence[str], parser: Callable[[str], Parsed], task: str):
    """(parsed answers, metric-module result, y_true, y_pred, per-item records) of a classification task."""
    refs = [reference_class(it, labels, parser, task) for it in items]
    parsed = [parser(it.get("prediction")) for it in items]
    preds = [p.value for p in parsed]
    result = classification.compute(preds, refs, labels)
    y_true, y_pred = classification.encode(preds, refs, labels)
    records = [
        {"parsed": p.value, "correct": p.value == r, **({"reason": p.reason} if p.reason else {})}
        for p, r in zip(parsed, refs, strict=True)
    ]
    return parsed, result, y_true, y_pred, records


def confusion_stat(y_true: np.ndarray, y_pred: np.ndarray, k: int, pick: Callable[[np.ndarray], float]) -> Stat:
    """Bootstrap statistic `pick(confusion matrix)` over weighted resamples."""
    return Stat(fn=lambda w: pick(classification.confusion(y_true, y_pred, k, w)))


def macro(name: str) -> Callable[[np.ndarray], float]:
    """Confusion matrix -> one macro score (`macro_f1`, `accuracy`, ...) of the metric module."""
    return lambda cm: classification.scores_from_confusion(cm)[name]


def per_class(name: str, index: int) -> Callable[[np.ndarray], float]:
    """Confusion matrix -> precision/recall/f1 of class `index` (the metric module's per-class rules)."""
    return lambda cm: float(classification.per_class_from_confusion(cm)[name][index])


def references(item: Item) -> list[str]:
    """The item's reference texts (a list for multi-reference items)."""
    ref = item.get("reference")
    return [str(r) for r in ref] if isinstance(ref, list) else [str(ref or "")]


def text_stats(preds: list[str], refs: list[list[str]], rep: list[int] | None) -> tuple[dict, dict, list[dict]]:
    """BLEU-1 (sentence mean and corpus) and ROUGE-1/L F-measure for (prediction, references) units."""
    bleu = np.array([bleu1.item_stats(p, r) for p, r in zip(preds, refs, strict=True)], dtype=float).reshape(-1, 4)
    sentence = [bleu1.bleu1_from_stats(*row) for row in bleu]
    rg = [rouge.item_scores(p, r if len(r) > 1 else r[0]) for p, r in zip(preds, refs, strict=True)]
    metrics = {
        "bleu1": float(np.mean(sentence)) if sentence else float("nan"),
        "corpus_bleu1": bleu1.bleu1_from_stats(*bleu.sum(axis=0)) if len(bleu) else float("nan"),
        "rouge1": float(np.mean([r["rouge1"] for r in rg])) if rg else float("nan"),
        "rougeL": float(np.mean([r["rougeL"] for r in rg])) if rg else float("nan"),
    }
    stats = {
        "bleu1": mean_stat(sentence, rep),
        "corpus_bleu1": Stat(fn=lambda w: bleu1.bleu1_from_stats(*(w @ bleu)), rep=None if rep is None else np.asarray(rep)),
        "rouge1": mean_stat([r["rouge1"] for r in rg], rep),
        "rougeL": mean_stat([r["rougeL"] for r in rg], rep),
    }
    scores = [{"bleu1": s, "rouge1": r["rouge1"], "rougeL": r["rougeL"]} for s, r in zip(sentence, rg, strict=True)]
    return metrics, stats, scores


def extras_of(result: dict[str, Any]) -> dict[str, Any]:
    """The per-class extras of a metric-module classification result."""
    return {key: result[key] for key in CLASSIFICATION_EXTRAS if key in result}
