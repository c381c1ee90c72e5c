"""ROUGE-1 and ROUGE-L F-measure (plus precision and recall) computed with Google's `rouge_score`.

Self-contained `evaluate` module, usable offline (the Hub's ``evaluate.load("rouge")`` needs a
download). Version 1.0.0 of the definition:

- ``RougeScorer(["rouge1", "rougeL"], use_stemmer=False).score(target, prediction)`` per item with
  `rouge_score`'s default tokeniser (lower-case, non-``[a-z0-9]`` characters separate tokens);
- several references: ``score_multi`` (per ROUGE type, the reference with the best F-measure);
- reported values are means over items of F-measure (``rouge1``, ``rougeL``), precision and recall.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from rouge_score import rouge_scorer

VERSION = "1.0.0"
ROUGE_TYPES = ("rouge1", "rougeL")

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, or list of lists of reference texts (multi-reference).
    use_stemmer: apply rouge_score's Porter stemmer (default False).
Returns:
    rouge1, rougeL (mean F-measure), rouge1_precision, rouge1_recall, rougeL_precision, rougeL_recall, n.
"""

_SCORERS: dict[bool, rouge_scorer.RougeScorer] = {}


def _scorer(use_stemmer: bool) -> rouge_scorer.RougeScorer:
    if use_stemmer not in _SCORERS:
        _SCORERS[use_stemmer] = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    return _SCORERS[use_stemmer]


def item_scores(prediction: str, references: str | Sequence[str], use_stemmer: bool = False) -> dict[str, float]:
    """Per-item F-measure, precision and recall for rouge1 and rougeL (target first, as rouge_score wants)."""
    scorer = _scorer(use_stemmer)
    prediction = prediction or ""
    if isinstance(references, str):
        scores = scorer.score(references, prediction)
    else:
        if not references:
            raise ValueError("every prediction needs at least one reference")
        scores = scorer.score_multi(list(references), prediction)
    out: dict[str, float] = {}
    for kind in ROUGE_TYPES:
        out[kind] = float(scores[kind].fmeasure)
        out[f"{kind}_precision"] = float(scores[kind].precision)
        out[f"{kind}_recall"] = float(scores[kind].recall)
    return out


def compute(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], use_stemmer: bool = False
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure of predictions against their reference(s) (best reference)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    keys = [k for kind in ROUGE_TYPES for k in (kind, f"{kind}_precision", f"{kind}_recall")]
    if not predictions:
        return {**{k: float("nan") for k in keys}, "n": 0}
    rows = [item_scores(p, r, use_stemmer) for p, r in zip(predictions, references, strict=True)]
    return {**{k: float(np.mean([row[k] for row in rows])) for k in keys}, "n": len(rows)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Rouge(evaluate.Metric):
    """`evaluate` wrapper of `compute` (``evaluate.load(<this dir>)``)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description=_KWARGS,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"),
                     "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, use_stemmer=False):
        return compute(predictions, references, use_stemmer=use_stemmer)
