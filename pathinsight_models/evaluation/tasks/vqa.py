"""`vqa`: question answering on imported data: token F1 and exact match (SQuAD normalisation).

Rows: config `vqa`, rows whose `source` is not one of PathEnhanceDS's own (PathVQA has its own task,
`pathvqa`). Free text, nothing parsed: token F1 from the `token_f1` metric module and exact match
with the same normaliser (lower case, punctuation and articles removed), best over references;
``closed_exact_match`` / ``open_token_f1`` restrict them to yes/no and other questions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pathenhanceds.schema import answer_type_for

from ...metrics.token_f1.squad import exact_match
from ..bootstrap import mean_stat
from ..metrics import token_f1
from . import Item, Rows, Task, TaskScore, register_task
from .common import references


def _answer_type(item: Item) -> str:
    t = item.get("answer_type")
    return t if t in ("closed", "open") else answer_type_for(references(item)[0])


def score_vqa(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Mean token F1 and exact match over all items, and split by closed (yes/no) and open questions."""
    preds = [str(it.get("prediction") or "") for it in items]
    refs = [references(it) for it in items]
    types = [_answer_type(it) for it in items]
    f1 = [token_f1.item_scores(p, r)["token_f1"] for p, r in zip(preds, refs, strict=True)]
    em = [max(exact_match(p, ref) for ref in r) for p, r in zip(preds, refs, strict=True)]
    cols: dict[str, list[float | None]] = {
        "token_f1": list(f1), "exact_match": list(em),
        "closed_exact_match": [e if t == "closed" else None for e, t in zip(em, types, strict=True)],
        "open_token_f1": [f if t == "open" else None for f, t in zip(f1, types, strict=True)],
    }

    def mean(values: list[float | None]) -> float:
        defined = [v for v in values if v is not None]
        return float(np.mean(defined)) if defined else float("nan")

    metrics = {"generic": {name: mean(values) for name, values in cols.items()}}
    stats = {"generic": {name: mean_stat(values) for name, values in cols.items()}}
    records = [{"parsed": None, "correct": bool(e), "answer_type": t, "scores": {"token_f1": f, "exact_match": e}}
               for f, e, t in zip(f1, em, types, strict=True)]
    extras = {"n_closed": types.count("closed"), "n_open": types.count("open")}
    return TaskScore(metrics, stats, records, 0, {}, extras)


TASK = register_task(Task(
    name="vqa", description="Imported VQA: token F1 and exact match (SQuAD normalisation), closed/open",
    scorer=score_vqa, modes=("generic",),
    headline=(("generic", "token_f1", "VQA token F1"), ("generic", "exact_match", "VQA exact")),
    max_new_tokens=64, rows=Rows("vqa", "vqa", (), foreign=True), metric_modules=("token_f1",),
    fields=("answer_type",), parsing="free text: token F1 and exact match after SQuAD normalisation", order=80,
))
