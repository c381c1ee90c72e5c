"""Other projects' scoring scripts, reimplemented item for item so our numbers mean what theirs mean.

- :mod:`.llava_med`: microsoft/LLaVA-Med ``llava/eval/run_eval.py`` after PR #35 (commit b9a98a7),
  with ``normalize_word`` and ``calculate_f1score``; also the pre-PR-#35 closed denominator.
- :mod:`.quilt`: aldraus/quilt-llava ``llava/eval/quilt_eval.py`` + ``quilt_utils.py``.
- :mod:`.squad`: SQuAD v1.1 ``normalize_answer`` and token F1.

Each definition is our own code (nothing vendored); the module docstrings name the files and
commits and list every upstream quirk that is reproduced. Pure functions, standard library and
NLTK only. The code lives beside the `evaluate` metric modules that use it
(``pathinsight_models/metrics/pathvqa/{llava_med,quilt}.py``, ``metrics/token_f1/squad.py``) so each
metric folder stays self-contained (``evaluate.load`` copies sibling files); this package is the
evaluation-side entry point. The flat names below are the public API.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...metrics.pathvqa import llava_med, quilt
from ...metrics.token_f1 import squad

PATHVQA_COMPAT_MODES = ("llava-med", "llava-med-pre35", "quilt")


def llava_med_normalize_word(text: str) -> str:
    """LLaVA-Med ``normalize_word`` (glossary.py), quirks included; see :mod:`.llava_med`."""
    return llava_med.normalize_word(text)


def llava_med_closed_correct(prediction: str | None, reference: str | None) -> bool:
    """LLaVA-Med closed rule on raw texts: lower-case + normalise, then "yes"/"no" and reference substrings."""
    return bool(llava_med.score_item(prediction, reference, closed=True).hit)


def llava_med_f1(prediction: str | None, reference: str | None) -> tuple[float, float, float]:
    """LLaVA-Med open (precision, recall, f1) for raw texts, as run_eval.py gets them (two normalisations)."""
    item = llava_med.score_item(prediction, reference, closed=False)
    return float(item.precision or 0.0), float(item.recall or 0.0), float(item.f1 or 0.0)


def llava_med_bleu1(prediction: str | None, reference: str | None) -> float:
    """LLaVA-Med open BLEU-1 for raw texts: NLTK sentence BLEU (1,0,0,0) on the once-normalised tokens."""
    return float(llava_med.score_item(prediction, reference, closed=False).bleu1 or 0.0)


def quilt_closed_answer(prediction: str | None) -> str:
    """Quilt-LLaVA's yes/no for a raw prediction: "no" iff a normalised token is "no"/"not", else "yes"."""
    return quilt.closed_answer(llava_med.normalize_word((prediction or "").lower()))


def squad_normalize(text: str | None) -> str:
    """SQuAD v1.1 ``normalize_answer``."""
    return squad.normalize_answer(text)


def pathvqa_compat_scores(
    predictions: Sequence[str | None],
    references: Sequence[str | None],
    closed: Sequence[bool],
    mode: str,
) -> dict[str, float | int]:
    """The aggregates the upstream script of ``mode`` would print (as fractions, not x100).

    ``closed[i]`` says whether item i is a closed (``CLOSED``) question. Modes: ``llava-med``
    (after PR #35), ``llava-med-pre35`` (before it: wrong yes/no answers left out of the closed
    denominator) and ``quilt``.
    """
    if not len(predictions) == len(references) == len(closed):
        raise ValueError(f"{len(predictions)} predictions, {len(references)} references, {len(closed)} closed flags")
    rows = zip(predictions, references, closed, strict=True)
    if mode in ("llava-med", "llava-med-pre35"):
        items = [llava_med.score_item(p, r, c) for p, r, c in rows]
        return llava_med.aggregate(items, pre35=mode == "llava-med-pre35")
    if mode == "quilt":
        return quilt.aggregate([quilt.score_item(p, r, c) for p, r, c in rows])
    raise ValueError(f"unknown compatibility mode {mode!r}; choose one of {', '.join(PATHVQA_COMPAT_MODES)}")


__all__ = [
    "PATHVQA_COMPAT_MODES", "llava_med", "llava_med_bleu1", "llava_med_closed_correct", "llava_med_f1",
    "llava_med_normalize_word", "pathvqa_compat_scores", "quilt", "quilt_closed_answer", "squad", "squad_normalize",
]
