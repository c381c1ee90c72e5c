"""PathVQA closed/open metrics in named modes, because "PathVQA accuracy" means different things.

Self-contained `evaluate` module (with its sibling files ``llava_med.py`` and ``quilt.py``). Version
2.0.0. A question is *closed* iff its reference answer is "yes" or "no" (unless ``answer_types``
says otherwise). All values are fractions in [0, 1] (published PathVQA numbers are percentages).

Modes named after another project's script reproduce that script item for item (normalisation,
rules, formulas, quirks; see ``llava_med.py`` and ``quilt.py`` for the files, commits and quirks):

- ``llava-med``: microsoft/LLaVA-Med ``llava/eval/run_eval.py`` after PR #35 (commit b9a98a7).
  Closed hit iff the normalised prediction contains "yes" or "no" as a substring **and** contains
  the reference as a substring ("normal", "not", "know" contain "no"). Open: ``calculate_f1score``
  recall/precision/F1 (tp counts prediction tokens found in the reference) and NLTK BLEU-1.
- ``llava-med-pre35``: the same script before PR #35: a closed prediction that contains "yes"/"no"
  but not the reference is left out of the closed denominator (numbers published before Dec 2023).
- ``quilt``: aldraus/quilt-llava ``llava/eval/quilt_eval.py`` (same normaliser): closed answer is
  "no" if a token is "no" or "not", else "yes" (empty -> "yes"). Open: the same recall/precision/F1.

Our own modes:

- ``normalized``: version 1.0.0's ``llava-med`` mode, renamed: our cleaner normalisation
  (lower-case; curly quotes straightened; commas between digits removed, other commas -> space;
  periods removed unless inside a number; ``;:!?"()[]{}`` -> space; quotes around words stripped;
  contractions expanded, "isn't" -> "is not"; articles dropped), the same substring closed rule,
  open recall = share of reference tokens found among the prediction tokens, precision = share of
  prediction tokens found among the reference tokens, their F1, BLEU-1 on these tokens.
- ``exact``: our normalisation, exact match, closed and open (lmms-eval style).

``closed_unparsed`` counts closed predictions with neither a "yes" nor a "no" token (our
normalisation): each mode still scores them by its own rule (a substring hit is possible for
``llava-med``, e.g. "normal" for "no"; ``quilt`` reads them as "yes") and the count is reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from nltk.translate.bleu_score import sentence_bleu

# sibling files, written as `from .x import` so that `evaluate.load` copies them along
from .llava_med import COMMIT as LLAVA_MED_COMMIT
from .llava_med import REPOSITORY as LLAVA_MED_REPOSITORY
from .llava_med import score_item as llava_med_item
from .quilt import COMMIT as QUILT_COMMIT
from .quilt import REPOSITORY as QUILT_REPOSITORY
from .quilt import score_item as quilt_item

VERSION = "2.0.0"
MODES = ("llava-med", "quilt", "normalized", "exact", "llava-med-pre35")
_OPEN = ("open_recall", "open_precision", "open_f1")
MODE_METRICS = {
    "llava-med": ("closed_accuracy", *_OPEN, "open_bleu1"),
    "llava-med-pre35": ("closed_accuracy", *_OPEN, "open_bleu1"),
    "quilt": ("closed_accuracy", *_OPEN),
    "normalized": ("closed_accuracy", *_OPEN, "open_bleu1"),
    "exact": ("closed_accuracy", "open_accuracy"),
}
PROVENANCE = {
    "llava-med": f"{LLAVA_MED_REPOSITORY}@{LLAVA_MED_COMMIT} llava/eval/run_eval.py (after PR #35)",
    "llava-med-pre35": f"{LLAVA_MED_REPOSITORY}@bdd4809155cc5a532625633111721ddd6c2225ef llava/eval/run_eval.py "
                       "(before PR #35)",
    "quilt": f"{QUILT_REPOSITORY}@{QUILT_COMMIT} llava/eval/quilt_eval.py",
    "normalized": "PathInsight (pathvqa 1.0.0 'llava-med' mode, renamed)",
    "exact": "PathInsight (normalised exact match, lmms-eval style)",
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
    mode: "llava-med" (default), "llava-med-pre35", "quilt", "normalized" or "exact".
Returns:
    the mode's metrics (see MODE_METRICS), n_closed, n_open, closed_unparsed, mode
    (and n_closed_counted for llava-med-pre35).
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
    """True for a yes/no reference (a closed question)."""
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


def _compat_item(prediction: str, reference: str, closed: bool, mode: str) -> dict:
    """An upstream-script mode's per-item scores (see llava_med.py / quilt.py)."""
    if mode == "quilt":
        q = quilt_item(prediction, reference, closed)
        if closed:
            return {"closed": True, "closed_hit": bool(q.hit), "unparsed": not has_yes_no(prediction)}
        return {"closed": False, "open_recall": q.recall, "open_precision": q.precision, "open_f1": q.f1}
    it = llava_med_item(prediction, reference, closed)
    if closed:
        # pre-#35: an item the old script did not count has no closed_hit (left out of the mean)
        hit = bool(it.hit) if (mode == "llava-med" or it.counted_pre35) else None
        return {"closed": True, "closed_hit": hit, "unparsed": not has_yes_no(prediction)}
    return {"closed": False, "open_recall": it.recall, "open_precision": it.precision, "open_f1": it.f1,
            "open_bleu1": it.bleu1}


def score_item(prediction: str, reference: str, answer_type: str | None = None, mode: str = "llava-med") -> dict:
    """Per-item scores of one mode: closed items give ``closed_hit`` (None: not counted by
    ``llava-med-pre35``); open items the open metrics."""
    if mode not in MODES:
        raise ValueError(f"unknown PathVQA mode {mode!r}; choose one of {', '.join(MODES)}")
    pred, ref = normalize(prediction), normalize(reference)
    closed = (answer_type == "closed") if answer_type in ("closed", "open") else ref in ("yes", "no")
    if mode in ("llava-med", "llava-med-pre35", "quilt"):
        return _compat_item(prediction or "", reference or "", closed, mode)
    if closed:
        hit = (("yes" in pred or "no" in pred) and ref in pred) if mode == "normalized" else pred == ref
        return {"closed": True, "closed_hit": bool(hit), "unparsed": not has_yes_no(prediction)}
    if mode == "exact":
        return {"closed": False, "open_accuracy": float(pred == ref)}
    recall, precision, f1 = _overlap(pred.split(), ref.split())
    bleu1 = float(sentence_bleu([ref.split()], pred.split(), weights=(1.0,))) if pred and ref else 0.0
    return {"closed": False, "open_recall": recall, "open_precision": precision, "open_f1": f1, "open_bleu1": bleu1}


def compute(
    predictions: Sequence[str],
    references: Sequence[str],
    answer_types: Sequence[str | None] | None = None,
    mode: str = "llava-med",
) -> dict:
    """Closed accuracy and open-question metrics of one mode (see the module doc)."""
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
    counted = [it["closed_hit"] for it in closed if it["closed_hit"] is not None]
    if mode == "llava-med-pre35":
        out["n_closed_counted"] = len(counted)
    for name in MODE_METRICS[mode]:
        if name == "closed_accuracy":
            out[name] = float(np.mean(counted)) if counted else float("nan")
        else:
            out[name] = float(np.mean([it[name] for it in opened])) if opened else float("nan")
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class PathVQA(evaluate.Metric):
    """`evaluate` wrapper of `compute` (``evaluate.load(<this dir>)``)."""

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
