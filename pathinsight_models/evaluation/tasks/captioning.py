"""`captioning`: bladder pathologist-level reports: BLEU-1, ROUGE-1/L and conclusion (grade) accuracy.

Rows: config `captioning`, source `pathologist_level` (the bladder source's user-facing name) and
imported captions (`pathinsight data import`: any source not PathEnhanceDS's own; their references
state no grade, so conclusion accuracy and parse failures count bladder-style references only). Modes:
``per-caption`` (each caption against its own reference) and ``multi-reference`` (one prediction
per image against all of that image's captions). Parser: `parsers.parse_grade` for the conclusion.

``multi-reference`` scores the first row's prediction of each image. When the rows of one image
carry different predictions (e.g. sampled decoding, or a predictions file from elsewhere), that is
logged as a warning and counted in ``extras.multi_reference_images_with_differing_predictions``
(with up to five examples in ``..._examples``) instead of passing silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..bootstrap import Stat, mean_stat
from ..parsers import GRADES, Parsed, parse_grade
from . import Item, Rows, Task, TaskScore, register_task
from .common import failure_reasons, references, text_stats

logger = logging.getLogger(__name__)


def score_captioning(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Text overlap per caption and/or per image, and accuracy of the stated grade."""
    preds = [str(it.get("prediction") or "") for it in items]
    metrics: dict[str, dict[str, float]] = {}
    stats: dict[str, dict[str, Stat]] = {}
    caption_metrics, caption_stats, per_caption_scores = text_stats(preds, [references(it) for it in items], None)
    parsed = [parse_grade(p) for p in preds]
    ref_grades = [it.get("label") if it.get("label") in GRADES else parse_grade(references(it)[0]).value
                  for it in items]
    correct = [None if r is None else p.value == r for p, r in zip(parsed, ref_grades, strict=True)]
    # A grade is parsed only where the reference states one (bladder reports, not imported captions).
    parsed = [p if r is not None else Parsed(None) for p, r in zip(parsed, ref_grades, strict=True)]
    graded = [r is not None for r in ref_grades]
    records = [
        {"parsed": p.value, "correct": c, "scores": s, **({"reason": p.reason} if p.reason else {})}
        for p, c, s in zip(parsed, correct, per_caption_scores, strict=True)
    ]
    if "per-caption" in modes:
        conclusion = [None if c is None else float(c) for c in correct]
        defined = [c for c in conclusion if c is not None]
        metrics["per-caption"] = {**caption_metrics,
                                  "conclusion_accuracy": float(np.mean(defined)) if defined else float("nan")}
        stats["per-caption"] = {**caption_stats, "conclusion_accuracy": mean_stat(conclusion)}
    extras: dict[str, Any] = {"conclusion_n": sum(c is not None for c in correct)}
    if "multi-reference" in modes:
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(str(it.get("group") or it["id"]), []).append(i)
        first = [idx[0] for idx in groups.values()]
        differing = [key for key, idx in groups.items() if len({preds[i] for i in idx}) > 1]
        if differing:
            logger.warning("captioning multi-reference: %d of %d images have rows with different predictions; "
                           "each is scored with its first row's prediction (first: %s)",
                           len(differing), len(groups), differing[0])
        extras["multi_reference_images_with_differing_predictions"] = len(differing)
        extras["multi_reference_images_with_differing_predictions_examples"] = differing[:5]
        multi_refs = [[r for i in idx for r in references(items[i])] for idx in groups.values()]
        m, s, _ = text_stats([preds[i] for i in first], multi_refs, first)
        metrics["multi-reference"], stats["multi-reference"] = m, s
        extras["n_images"] = len(groups)
    failures = [p for p, g in zip(parsed, graded, strict=True) if g and not p.ok]
    return TaskScore(metrics, stats, records, len(failures), failure_reasons(parsed), extras)


TASK = register_task(Task(
    name="captioning", description="Bladder pathologist-level reports: BLEU-1, ROUGE-1/L, conclusion accuracy",
    scorer=score_captioning, modes=("per-caption", "multi-reference"),
    headline=(("per-caption", "bleu1", "Bladder BLEU-1"), ("per-caption", "rouge1", "Bladder ROUGE-1")),
    max_new_tokens=160, rows=Rows("captioning", "captioning", ("pathologist_level",), foreign=True), metric_modules=("bleu1", "rouge"),
    fields=("label", "group"),
    parsing="grade = last 'high/low grade' anywhere, else 'normal'/'insufficient information' in the last sentence",
    default=True, order=30,
))
