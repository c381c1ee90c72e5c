"""SQuAD answer normalisation and token F1, reimplemented (used by the ``token_f1`` metric module).

Provenance: the official SQuAD evaluation scripts (Rajpurkar et al.), ``evaluate-v1.1.py``
(``normalize_answer``, ``f1_score``, ``exact_match_score``, ``metric_max_over_ground_truths``) and
``evaluate-v2.0.py`` (``compute_f1``, whose ``normalize_answer`` is the same):

- normalise: lower-case, delete every ASCII punctuation character (``string.punctuation``, so
  "don't" -> "dont", "x-ray" -> "xray"), replace the words a/an/the by a space, collapse whitespace;
- F1: tokens = whitespace split of the normalised text; common = multiset intersection;
  precision = common / prediction tokens, recall = common / reference tokens; 0 when nothing is
  shared. Empty sides: v1.1 has no rule (so 0, even when both are empty); v2.0 gives 1 when both
  are empty and 0 when one is (``empty="v2.0"``, what ``token_f1`` uses);
- several references: the best score over them.

Standard library only; sits beside ``token_f1.py`` so the metric folder stays self-contained.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str | None) -> str:
    """SQuAD v1.1 ``normalize_answer``."""
    s = (text or "").lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def precision_recall_f1(
    prediction: str | None, reference: str | None, *, empty: str = "v1.1"
) -> tuple[float, float, float]:
    """SQuAD token (precision, recall, f1): v1.1 ``f1_score``, or v2.0 ``compute_f1`` for empty sides."""
    if empty not in ("v1.1", "v2.0"):
        raise ValueError(f"empty must be 'v1.1' or 'v2.0', not {empty!r}")
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if empty == "v2.0" and (not pred or not ref):
        same_answer = float(pred == ref)
        return same_answer, same_answer, same_answer
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(pred), same / len(ref)
    return precision, recall, 2 * precision * recall / (precision + recall)


def exact_match(prediction: str | None, reference: str | None) -> float:
    """SQuAD v1.1 ``exact_match_score``: 1.0 iff the normalised texts are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def best_over_references(
    prediction: str | None, references: str | Sequence[str], *, empty: str = "v1.1"
) -> tuple[float, float, float]:
    """``metric_max_over_ground_truths`` for F1: the (precision, recall, f1) of the reference with the best F1."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("every prediction needs at least one reference")
    return max((precision_recall_f1(prediction, r, empty=empty) for r in refs), key=lambda prf: prf[2])


__all__ = ["best_over_references", "exact_match", "normalize_answer", "precision_recall_f1"]
