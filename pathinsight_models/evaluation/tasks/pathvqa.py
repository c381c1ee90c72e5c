"""`pathvqa`: PathVQA closed accuracy and open recall/F1/BLEU-1 in named modes.

Rows: config `vqa`, source `pathvqa`. The modes (``llava-med``, ``quilt``, ``llava-med-pre35``:
the upstream scripts item for item; ``normalized``, ``exact``: ours; see the `pathvqa` metric
module) each apply their own closed/open rule. A closed answer without a yes/no word is reported
as unparsed (``parsed: null`` with a ``reason``) but still scored by each mode's own rule:
``correct`` is the primary mode's verdict, ``scores.<mode>.closed_hit`` every mode's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pathenhanceds.errors import InputError

from ..bootstrap import Stat, mean_stat
from ..metrics import pathvqa
from . import Item, Rows, Task, TaskScore, register_task


def answer_type(item: Item) -> str:
    """``closed`` or ``open``: the item's `answer_type`, else inferred from a yes/no reference."""
    t = item.get("answer_type")
    return t if t in ("closed", "open") else ("closed" if pathvqa.is_closed(str(item.get("reference", ""))) else "open")


UNPARSED = "no yes/no in answer to a closed question"


def score_pathvqa(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Closed accuracy and open recall/F1/BLEU-1 per mode; records follow the primary mode."""
    preds = [str(it.get("prediction") or "") for it in items]
    refs = [str(it.get("reference") or "") for it in items]
    types = [answer_type(it) for it in items]
    metrics: dict[str, dict[str, float]] = {}
    stats: dict[str, dict[str, Stat]] = {}
    per_mode: dict[str, list[dict]] = {}
    for mode in modes:
        try:
            scored = [pathvqa.score_item(p, r, t, mode) for p, r, t in zip(preds, refs, types, strict=True)]
            result = pathvqa.compute(preds, refs, types, mode=mode)
        except ValueError as exc:  # quilt_eval.py asserts a closed reference is yes/no
            bad = next((it["id"] for it, r, t in zip(items, refs, types, strict=True)
                        if t == "closed" and pathvqa.normalize(r) not in ("yes", "no")), None)
            raise InputError(f"PathVQA mode {mode}: {exc}", record=bad,
                             fix='mark the item "answer_type": "open", or score without this mode') from None
        per_mode[mode] = scored
        metrics[mode] = {name: result[name] for name in pathvqa.MODE_METRICS[mode]}
        stats[mode] = {}
        for name in pathvqa.MODE_METRICS[mode]:
            key = "closed_hit" if name == "closed_accuracy" else name
            # None: open item for a closed metric (and vice versa), or not counted by llava-med-pre35
            stats[mode][name] = mean_stat([float(s[key]) if s.get(key) is not None else None for s in scored])
    primary = "llava-med" if "llava-med" in modes else modes[0]
    records, reasons = [], Counter()
    failures = 0
    for i, t in enumerate(types):
        scores = {mode: {k: v for k, v in per_mode[mode][i].items() if k not in ("closed", "unparsed")} for mode in modes}
        if t == "closed":
            # the first yes/no word; None exactly when the module counts the answer in closed_unparsed.
            # An unparsed answer is still scored by each mode's rule (substring hit, quilt's "yes").
            parsed = next((w for w in pathvqa.normalize(preds[i]).split() if w in ("yes", "no")), None)
            hit = per_mode[primary][i]["closed_hit"]
            record = {"parsed": parsed, "correct": None if hit is None else bool(hit), "answer_type": t,
                      "scores": scores}
            if parsed is None:
                failures += 1
                reasons[UNPARSED] += 1
                record["reason"] = UNPARSED
            records.append(record)
        else:
            records.append({"parsed": None, "correct": None, "answer_type": t, "scores": scores})
    extras = {"n_closed": types.count("closed"), "n_open": types.count("open"), "correct_mode": primary}
    return TaskScore(metrics, stats, records, failures, dict(reasons), extras)


TASK = register_task(Task(
    name="pathvqa", description="PathVQA closed accuracy and open recall/F1/BLEU-1 in named modes",
    scorer=score_pathvqa, modes=pathvqa.MODES,
    headline=(("llava-med", "closed_accuracy", "PathVQA closed"), ("llava-med", "open_recall", "PathVQA open recall")),
    max_new_tokens=32, rows=Rows("vqa", "vqa", ("pathvqa",)), metric_modules=("pathvqa",),
    fields=("answer_type",),
    parsing="closed answers without a yes/no word are reported as unparsed; each mode still scores them by "
            "its own rule (llava-med: substrings, quilt: 'yes' unless no/not)",
    default=True, order=40,
))
