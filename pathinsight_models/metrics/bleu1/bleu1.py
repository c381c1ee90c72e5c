"""BLEU-1: unigram precision with brevity penalty, computed with NLTK on our own tokenisation.

Self-contained `evaluate` module (only third-party imports) so it can be pushed to the Hub as is.
Version 1.0.0 of the definition:

- tokens: lower-case, every run of characters other than ``[a-z0-9]`` is a separator (the same
  tokeniser as `rouge_score`, so BLEU-1 and ROUGE-1 count the same words; no NLTK downloads);
- ``bleu1``: mean over items of NLTK ``sentence_bleu(refs, hyp, weights=(1.0,))`` (clipped unigram
  precision x brevity penalty against the closest reference length; 0 when nothing matches);
- ``corpus_bleu1``: clipped unigram matches and lengths summed over the corpus, then precision x
  brevity penalty (equals sacrebleu ``BLEU(max_ngram_order=1, tokenize="none")`` on our tokens, and
  NLTK ``corpus_bleu(weights=(1.0,))`` unless a prediction is empty: NLTK counts an empty prediction
  as one unigram in the precision denominator, we count zero).

A prediction may have one reference (a string) or several (a list of strings).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from nltk.translate.bleu_score import brevity_penalty, closest_ref_length, modified_precision

VERSION = "1.0.0"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, or list of lists of reference texts (multi-reference).
Returns:
    bleu1: mean sentence-level BLEU-1 in [0, 1]; corpus_bleu1: corpus-level BLEU-1 in [0, 1]; n.
"""


def tokenize(text: str | None) -> list[str]:
    """Lower-case alphanumeric words (what `rouge_score`'s default tokeniser yields without stemming)."""
    return _NON_ALNUM.sub(" ", (text or "").lower()).split()


def _as_references(reference: str | Sequence[str]) -> list[str]:
    return [reference] if isinstance(reference, str) else list(reference)


def item_stats(prediction: str, references: str | Sequence[str]) -> tuple[int, int, int, int]:
    """(clipped unigram matches, hypothesis unigrams, hypothesis length, closest reference length).

    Sums of these over items give corpus BLEU-1, which is what lets a bootstrap re-weight items.
    """
    refs = [tokenize(r) for r in _as_references(references)]
    hyp = tokenize(prediction)
    if not refs:
        raise ValueError("every prediction needs at least one reference")
    matches = modified_precision(refs, hyp, 1).numerator  # clipped unigram matches
    return int(matches), len(hyp), len(hyp), closest_ref_length(refs, len(hyp))


def bleu1_from_stats(matches: float, total: float, hyp_len: float, ref_len: float) -> float:
    """BLEU-1 from (possibly weighted) sums of `item_stats`; same rule as NLTK (0 without a match)."""
    if matches <= 0 or total <= 0:
        return 0.0
    return float(brevity_penalty(ref_len, hyp_len) * (matches / total))


def sentence_bleu1(prediction: str, references: str | Sequence[str]) -> float:
    """BLEU-1 of one prediction (equals NLTK ``sentence_bleu(..., weights=(1.0,))``)."""
    return bleu1_from_stats(*item_stats(prediction, references))


def compute(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Mean sentence BLEU-1 and corpus BLEU-1 of predictions against their reference(s)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {"bleu1": float("nan"), "corpus_bleu1": float("nan"), "n": 0}
    stats = np.array([item_stats(p, r) for p, r in zip(predictions, references, strict=True)], dtype=float)
    sentence = [bleu1_from_stats(*row) for row in stats]
    return {"bleu1": float(np.mean(sentence)), "corpus_bleu1": bleu1_from_stats(*stats.sum(axis=0)),
            "n": len(predictions)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Bleu1(evaluate.Metric):
    """`evaluate` wrapper of `compute` (``evaluate.load(<this dir>)``)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Papineni et al., BLEU: a method for automatic evaluation of machine translation, ACL 2002.",
            inputs_description=_KWARGS,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"),
                     "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://www.nltk.org/api/nltk.translate.bleu_score.html"],
        )

    def _compute(self, predictions, references):
        return compute(predictions, references)
