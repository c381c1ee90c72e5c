"""PathVQA closed/open metrics in three named modes, because "PathVQA accuracy" means different things.

Self-contained `evaluate` module. Version 1.0.0. A question is *closed* iff its reference answer is
"yes" or "no" (unless ``answer_types`` says otherwise). All values are fractions in [0, 1]
(published PathVQA numbers are percentages: multiply by 100).

Normalisation (LLaVA-Med style): lower-case; curly quotes made straight; commas between digits
removed ("1,000" -> "1000") and other commas replaced by spaces; periods removed unless inside a
number ("3.5" stays); the characters ``;:!?"()[]{}`` replaced by spaces; quotes around words
stripped; contractions expanded ("isn't" -> "is not", "can't" -> "can not", "it's" -> "it is",
...); articles a/an/the dropped; tokens are the whitespace-split words.

Modes
- ``llava-med``: closed hit iff the normalised prediction contains "yes" or "no" as a substring
  **and** contains the normalised reference as a substring. Known flaw kept for comparability:
  "no" is a substring of "normal", "not", "know", ... Open: token recall = share of reference
  tokens that occur among the prediction tokens; also token precision (share of prediction tokens
  that occur among the reference tokens), their F1, and BLEU-1 (NLTK, unigram weights) on
  normalised tokens.
- ``quilt``: closed prediction is "no" if any token is "no" or "not", else "yes"; compared with the
  reference. Open: the same token recall as ``llava-med``.
- ``exact``: normalised exact match, closed and open (lmms-eval style).

``closed_unparsed`` counts closed predictions with neither a "yes" nor a "no" token: they are
scored by the mode's rule (a miss for ``llava-med``/``exact``, "yes" for ``quilt``) and reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from nltk.translate.bleu_score import sentence_bleu

VERSION = "1.0.0"
MODES = ("llava-med", "quilt", "exact")
MODE_METRICS = {
    "llava-med": ("closed_accuracy", "open_recall", "open_precision", "open_f1", "open_bleu1"),
    "quilt": ("closed_accuracy", "open_recall"),
    "exact": ("closed_accuracy", "open_accuracy"),
}

_CONTRACTIONS = {
    "can't": "can not", "won't": "will not", "shan't": "shall not", "ain't": "is not",
    "it's": "it is", "that's": "that is", "there's": "there is", "what's": "what is",
    "he's": "he is", "she's": "she is", "let's": "let us",
}
_SUFFIXES = (("n't", " not"), ("'re", " are"), ("'ve", " have"), ("'ll", " will"), ("'m", " am"), ("'d", " would"))
_ARTICLES = {"a", "an", "the"}
_OTHER_PUNCT = re.compile(r"[;:!?\"()\[\]{}]")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions: generated answers.
    references: reference answers.
    answer_types: optional "closed"/"open" per item (default: closed iff the reference is yes/no).
    mode: "llava-med" (default), "quilt" or "exact".
Returns:
    the mode's metrics (see MODE_METRICS), n_closed, n_open, closed_unparsed, mode.
"""


def _expand(word: str) -> str:
    if word in _CONTRACTIONS:
        return _CONTRACTIONS[word]
    for suffix, expansion in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return word[: -len(suffix)] + expansion
    return word


def normalize(text: str | None) -> str:
    """The normalised answer string (tokens joined by single spaces)."""
    s = (text or "").lower().replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    s = _DIGIT_COMMA.sub("", s).replace(",", " ")
    s = _PERIOD.sub("", s)
    s = _OTHER_PUNCT.sub(" ", s)
    words = (_expand(w.strip("'")) for w in s.split())
    return " ".join(w for w in " ".join(words).split() if w not in _ARTICLES)


def is_closed(reference: str) -> bool:
    return normalize(reference) in ("yes", "no")


def has_yes_no(prediction: str) -> bool:
    """A "yes" or "no" token in the normalised prediction (the parse check reported as closed_unparsed)."""
    words = set(normalize(prediction).split())
    return "yes" in words or "no" in words


def _overlap(pred_tokens: list[str], ref_tokens: list[str]) -> tuple[float, float, float]:
    recall = sum(t in set(pred_tokens) for t in ref_tokens) / len(ref_tokens) if ref_tokens else 0.0
    precision = sum(t in set(ref_tokens) for t in pred_tokens) / len(pred_tokens) if pred_tokens else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return recall, precision, f1


def score_item(prediction: str, reference: str, answer_type: str | None = None, mode: str = "llava-med") -> dict:
    """Per-item scores of one mode: closed items give ``closed_hit``; open items the open metrics."""
    if mode not in MODES:
        raise ValueError(f"unknown PathVQA mode {mode!r}; choose one of {', '.join(MODES)}")
    pred, ref = normalize(prediction), normalize(reference)
    closed = (answer_type == "closed") if answer_type in ("closed", "open") else ref in ("yes", "no")
    if closed:
        if mode == "llava-med":
            hit = ("yes" in pred or "no" in pred) and ref in pred
        elif mode == "quilt":
            words = pred.split()
            hit = ("no" if ("no" in words or "not" in words) else "yes") == ref
        else:
            hit = pred == ref
        return {"closed": True, "closed_hit": bool(hit), "unparsed": not has_yes_no(prediction)}
    if mode == "exact":
        return {"closed": False, "open_accuracy": float(pred == ref)}
    recall, precision, f1 = _overlap(pred.split(), ref.split())
    if mode == "quilt":
        return {"closed": False, "open_recall": recall}
    bleu1 = float(sentence_bleu([ref.split()], pred.split(), weights=(1.0,))) if pred and ref else 0.0
    return {"closed": False, "open_recall": recall, "open_precision": precision, "open_f1": f1, "open_bleu1": bleu1}


def compute(
    predictions: Sequence[str],
    references: Sequence[str],
    answer_types: Sequence[str | None] | None = None,
    mode: str = "llava-med",
) -> dict:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    types = list(answer_types) if answer_types is not None else [None] * len(predictions)
    if len(types) != len(predictions):
        raise ValueError(f"{len(types)} answer_types for {len(predictions)} predictions")
    items = [score_item(p, r, t, mode) for p, r, t in zip(predictions, references, types, strict=True)]
    closed = [it for it in items if it["closed"]]
    opened = [it for it in items if not it["closed"]]
    out: dict = {"mode": mode, "n_closed": len(closed), "n_open": len(opened),
                 "closed_unparsed": sum(it["unparsed"] for it in closed)}
    for name in MODE_METRICS[mode]:
        if name == "closed_accuracy":
            out[name] = float(np.mean([it["closed_hit"] for it in closed])) if closed else float("nan")
        else:
            out[name] = float(np.mean([it[name] for it in opened])) if opened else float("nan")
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PathVQA(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="He et al., PathVQA: 30000+ Questions for Medical Visual Question Answering, 2020.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, answer_types=None, mode="llava-med"):
        return compute(predictions, references, answer_types=answer_types, mode=mode)
