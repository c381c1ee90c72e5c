"""Token F1 (bag of words with multiplicity, SQuAD style) between a prediction and a reference.

Self-contained `evaluate` module. Version 1.0.0 of the definition: tokens are lower-case
``[a-z0-9]`` runs (the `rouge_score` tokeniser); common = multiset intersection; precision =
common / prediction tokens, recall = common / reference tokens, F1 their harmonic mean (0 when
nothing is shared; 1 when both are empty, 0 when only one is). With several references the best F1
is kept. Reported values are means over items.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

VERSION = "1.0.0"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts (or lists of reference texts).
Returns:
    token_f1, token_precision, token_recall (means in [0, 1]), n.
"""


def tokenize(text: str | None) -> list[str]:
    return _NON_ALNUM.sub(" ", (text or "").lower()).split()


def _single(prediction: str, reference: str) -> tuple[float, float, float]:
    pred, ref = tokenize(prediction), tokenize(reference)
    if not pred or not ref:
        same = float(pred == ref)
        return same, same, same
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall), precision, recall


def item_scores(prediction: str, references: str | Sequence[str]) -> dict[str, float]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("every prediction needs at least one reference")
    f1, precision, recall = max(_single(prediction, r) for r in refs)
    return {"token_f1": f1, "token_precision": precision, "token_recall": recall}


def compute(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    keys = ("token_f1", "token_precision", "token_recall")
    if not predictions:
        return {**{k: float("nan") for k in keys}, "n": 0}
    rows = [item_scores(p, r) for p, r in zip(predictions, references, strict=True)]
    return {**{k: float(np.mean([row[k] for row in rows])) for k in keys}, "n": len(rows)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class TokenF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016.",
            inputs_description=_KWARGS,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"),
                     "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references):
        return compute(predictions, references)
