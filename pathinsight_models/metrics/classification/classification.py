"""Classification metrics over class names, with unparsed answers counted as wrong (scikit-learn).

Self-contained `evaluate` module. Version 1.0.0 of the definition:

- ``labels``: the class names; a prediction that is ``None``/empty or not one of them is
  *unparsed*: it is wrong for accuracy and recall, adds to ``n_unparsed`` and fills the extra
  ``unparsed`` column of the confusion matrix. It is never replaced by a guess.
- ``macro_precision``/``macro_recall``/``macro_f1``: unweighted means over the classes that occur
  in the references (scikit-learn ``precision_recall_fscore_support(labels=..., zero_division=0)``);
- ``balanced_accuracy``: scikit-learn ``balanced_accuracy_score`` (= macro recall here);
- ``accuracy``: share of predictions equal to the reference; ``per_class`` and ``confusion_matrix``
  (rows = reference classes in ``labels`` order, columns = ``labels`` + ``unparsed``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

VERSION = "1.0.0"
UNPARSED = "unparsed"

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions: predicted class names (None or unknown names count as unparsed).
    references: reference class names (each must be one of `labels`).
    labels: the class names, in the order used for per-class results and the confusion matrix.
    sample_weight: optional per-item weights (used by bootstraps).
Returns:
    accuracy, macro_precision, macro_recall, macro_f1, balanced_accuracy, n, n_unparsed,
    per_class {label: {precision, recall, f1, support}}, confusion_matrix, confusion_labels.
"""


def encode(predictions: Sequence[str | None], references: Sequence[str], labels: Sequence[str]):
    """Class indices; unparsed predictions get index ``len(labels)``."""
    index = {label: i for i, label in enumerate(labels)}
    if len(index) != len(labels) or UNPARSED in index:
        raise ValueError(f"labels must be distinct and must not contain {UNPARSED!r}")
    bad = sorted({r for r in references if r not in index}, key=str)
    if bad:
        raise ValueError(f"references not in labels: {bad[:5]}")
    y_true = np.array([index[r] for r in references], dtype=np.int64)
    y_pred = np.array([index.get(p, len(labels)) if p else len(labels) for p in predictions], dtype=np.int64)
    return y_true, y_pred


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted confusion counts, shape (n_labels, n_labels + 1); the last column is `unparsed`."""
    width = n_labels + 1
    flat = np.bincount(y_true * width + y_pred, weights=weights, minlength=n_labels * width)
    return flat.reshape(n_labels, width)


def per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (same rules as sklearn).

    Unparsed answers (last column) count as misses for recall; a class never predicted has precision
    0 and a class without references has recall 0 (scikit-learn's ``zero_division=0``).
    """
    k = cm.shape[0]
    tp = np.diag(cm[:, :k])
    support = cm.sum(axis=1)
    predicted = cm[:, :k].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro P/R/F1 from a confusion matrix (fast path for bootstraps; same rules as sklearn)."""
    k = cm.shape[0]
    per = per_class_from_confusion(cm)
    present = per["support"] > 0
    total = cm.sum()
    if not present.any():
        nan = float("nan")
        return {"accuracy": nan, "macro_precision": nan, "macro_recall": nan, "macro_f1": nan, "balanced_accuracy": nan}
    macro_recall = float(per["recall"][present].mean())
    return {
        "accuracy": float(np.diag(cm[:, :k]).sum() / total),
        "macro_precision": float(per["precision"][present].mean()),
        "macro_recall": macro_recall,
        "macro_f1": float(per["f1"][present].mean()),
        "balanced_accuracy": macro_recall,
    }


def compute(
    predictions: Sequence[str | None],
    references: Sequence[str],
    labels: Sequence[str],
    sample_weight: Sequence[float] | None = None,
) -> dict:
    """Accuracy, macro/per-class P/R/F1, balanced accuracy and the confusion matrix (see the module doc)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    labels = list(labels)
    y_true, y_pred = encode(predictions, references, labels)
    if len(y_true) == 0:
        return {"n": 0, "n_unparsed": 0}
    names = np.array([*labels, UNPARSED], dtype=object)
    t, p = names[y_true], names[y_pred]
    present = [label for i, label in enumerate(labels) if (y_true == i).any()]
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    precision, recall, f1, _ = precision_recall_fscore_support(
        t, p, labels=present, average="macro", zero_division=0, sample_weight=w
    )
    per_p, per_r, per_f, per_s = precision_recall_fscore_support(
        t, p, labels=labels, average=None, zero_division=0, sample_weight=w
    )
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" for the unparsed column
        warnings.simplefilter("ignore")
        balanced = balanced_accuracy_score(t, p, sample_weight=w)
    cm = confusion_matrix(t, p, labels=list(names), sample_weight=w)[: len(labels)]
    weights = np.ones(len(t)) if w is None else w
    return {
        "accuracy": float(weights[y_true == y_pred].sum() / weights.sum()),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "balanced_accuracy": float(balanced),
        "n": len(t),
        "n_unparsed": int((y_pred == len(labels)).sum()),
        "per_class": {
            label: {"precision": float(per_p[i]), "recall": float(per_r[i]), "f1": float(per_f[i]),
                    "support": int((y_true == i).sum())}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        "confusion_labels": list(names),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Classification(evaluate.Metric):
    """`evaluate` wrapper of `compute` (``evaluate.load(<this dir>)``)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Pedregosa et al., Scikit-learn: Machine Learning in Python, JMLR 2011.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions, references, labels=None, sample_weight=None):
        if labels is None:
            raise ValueError("pass labels=[...] (the class names)")
        return compute(predictions, references, labels, sample_weight)
