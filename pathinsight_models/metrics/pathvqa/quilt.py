"""aldraus/quilt-llava's PathVQA scoring, reimplemented item for item (mode ``quilt``).

Provenance: https://github.com/aldraus/quilt-llava at commit a7a9a4c3ddccea6011e5ba34e8666514b855b93a
(``llava/eval/quilt_eval.py`` ``evaluate`` and ``llava/eval/quilt_utils.py``, unchanged since commit
df968d5), run as ``scripts/v1_5/eval/pvqa.sh`` does (no ``--quilt``, references from ``answer``).

- Normalisation: ``quilt_utils.normalize_word`` is LLaVA-Med's ``normalize_word`` (same tables,
  same code), see :mod:`.llava_med`.
- Anchor: the normalised prediction is cut to the length (in characters) of a normalised "anchor"
  answer. With no anchor file the anchor is the prediction itself, i.e. no truncation; that is the
  default here (``anchor=None``).
- Closed (``answer_type == "CLOSED"``): commas removed, the text split on single spaces; the answer
  is "no" if a token is "no" or "not" (upstream also checks "No", which lower-cased text never
  has), otherwise "yes" (so an empty or unrelated answer counts as "yes"); hit iff it equals the
  normalised reference, which must be "yes" or "no" (upstream asserts).
- Open (``"OPEN"`` or ``"other"``): ``calculate_f1score`` and ``calculate_exactmatch`` (identical to
  LLaVA-Med's, including the second normalisation). BLEU is computed upstream but not reported.
- Aggregates: means over open questions; closed accuracy = hits / closed questions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .llava_med import exact_match_score, normalize_word, precision_recall_f1

COMMIT = "a7a9a4c3ddccea6011e5ba34e8666514b855b93a"
REPOSITORY = "aldraus/quilt-llava"


def closed_answer(prediction: str) -> str:
    """quilt_eval.py's yes/no reading of a normalised prediction: "no" iff a token is "no"/"not"."""
    words = prediction.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


@dataclass(frozen=True)
class ItemScore:
    """One question scored as quilt_eval.py scores it (closed fields or open fields are None)."""

    closed: bool
    prediction: str  # normalised (and truncated to the anchor, if any)
    reference: str
    answer: str | None = None  # closed: the yes/no read from the prediction
    hit: bool | None = None
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    exact_match: float | None = None


def score_item(prediction: str | None, reference: str | None, closed: bool, anchor: str | None = None) -> ItemScore:
    """One item. ``anchor``: the answer whose normalised length caps the prediction (upstream ``--anchor``).

    A closed reference that does not normalise to "yes"/"no" is a ``ValueError`` (upstream asserts).
    """
    pred = normalize_word((prediction or "").lower())
    ref = normalize_word((reference or "").lower())
    if anchor is not None:
        pred = pred[: len(normalize_word(anchor.lower()))]
    if closed:
        if ref not in ("yes", "no"):
            raise ValueError(f"closed question with reference {reference!r}: quilt_eval.py needs yes or no")
        answer = closed_answer(pred)
        return ItemScore(True, pred, ref, answer=answer, hit=answer == ref)
    precision, recall, f1 = precision_recall_f1(pred, ref)
    return ItemScore(False, pred, ref, f1=f1, precision=precision, recall=recall,
                     exact_match=exact_match_score(pred, ref))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def aggregate(items: Iterable[ItemScore]) -> dict[str, float | int]:
    """quilt_eval.py's aggregates as fractions (upstream prints them x100); NaN for an empty group."""
    items = list(items)
    closed = [it for it in items if it.closed]
    opened = [it for it in items if not it.closed]
    return {
        "closed_accuracy": _mean([float(bool(it.hit)) for it in closed]),
        "open_recall": _mean([it.recall for it in opened if it.recall is not None]),
        "open_precision": _mean([it.precision for it in opened if it.precision is not None]),
        "open_f1": _mean([it.f1 for it in opened if it.f1 is not None]),
        "open_exact_match": _mean([it.exact_match for it in opened if it.exact_match is not None]),
        "n_closed": len(closed),
        "n_open": len(opened),
    }


__all__ = ["COMMIT", "REPOSITORY", "ItemScore", "aggregate", "closed_answer", "score_item"]
