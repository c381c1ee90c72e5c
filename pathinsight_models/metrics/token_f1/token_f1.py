"""Token F1 (bag of words with multiplicity, SQuAD style) between a prediction and a reference.

Self-contained `evaluate` module (with its sibling ``squad.py``). Version 2.0.0 of the definition:
texts are normalised as SQuAD's ``normalize_answer`` does (v1.1 and v2.0 alike: lower-case, ASCII
punctuation deleted, articles a/an/the dropped, whitespace tokens); common = multiset
intersection; precision = common / prediction tokens, recall = common / reference tokens, F1 their
harmonic mean (0 when nothing is shared; 1 when both are empty, 0 when only one is, as SQuAD v2.0's
``compute_f1``). With several references the best F1 is kept. Reported values are means over
items. (Version 1.0.0 tokenised lower-case ``[a-z0-9]`` runs and kept articles.)
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

# sibling file, written as `from .x import` so that `evaluate.load` copies it along
from .squad import normalize_answer
from .squad import precision_recall_f1 as squad_precision_recall_f1

VERSION = "2.0.0"

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts (or lists of reference texts).
Returns:
    token_f1, token_precision, token_recall (means in [0, 1]), n.
"""


def tokenize(text: str | None) -> list[str]:
    """SQuAD-normalised whitespace tokens."""
    return normalize_answer(text).split()


def _single(prediction: str, reference: str) -> tuple[float, float, float]:
    precision, recall, f1 = squad_precision_recall_f1(prediction, reference, empty="v2.0")
    return f1, precision, recall


def item_scores(prediction: str, references: str | Sequence[str]) -> dict[str, float]:
    """Token F1/precision/recall of one prediction against its best-matching reference."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("every prediction needs at least one reference")
    f1, precision, recall = max(_single(prediction, r) for r in refs)
    return {"token_f1": f1, "token_precision": precision, "token_recall": recall}


def compute(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Mean token F1/precision/recall over predictions."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    keys = ("token_f1", "token_precision", "token_recall")
    if not predictions:
        return {**{k: float("nan") for k in keys}, "n": 0}
    rows = [item_scores(p, r) for p, r in zip(predictions, references, strict=True)]
    return {**{k: float(np.mean([row[k] for row in rows])) for k in keys}, "n": len(rows)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class TokenF1(evaluate.Metric):
    """`evaluate` wrapper of `compute` (``evaluate.load(<this dir>)``)."""

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
