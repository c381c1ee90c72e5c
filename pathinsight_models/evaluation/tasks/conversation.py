"""`conversation`: multi-turn conversations with teacher-forced history: token F1, ROUGE-1/L.

Rows: config `conversation`, any source; one item per assistant turn (`conversation_items`), the
reference turns before it as history. Free text: nothing is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..bootstrap import mean_stat
from ..metrics import rouge, token_f1
from . import Item, Rows, Task, TaskScore, conversation_items, register_task
from .common import references


def score_conversation(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Mean token F1 and ROUGE-1/L of each turn against its reference."""
    preds = [str(it.get("prediction") or "") for it in items]
    refs = [references(it) for it in items]
    tf = [token_f1.item_scores(p, r) for p, r in zip(preds, refs, strict=True)]
    rg = [rouge.item_scores(p, r if len(r) > 1 else r[0]) for p, r in zip(preds, refs, strict=True)]
    cols = {"token_f1": [t["token_f1"] for t in tf], "rougeL": [r["rougeL"] for r in rg],
            "rouge1": [r["rouge1"] for r in rg]}
    metrics = {"teacher-forced": {k: float(np.mean(v)) if v else float("nan") for k, v in cols.items()}}
    stats = {"teacher-forced": {k: mean_stat(v) for k, v in cols.items()}}
    records = [{"parsed": None, "correct": None, "scores": {k: cols[k][i] for k in cols}} for i in range(len(items))]
    return TaskScore(metrics, stats, records, 0, {}, {})


TASK = register_task(Task(
    name="conversation", description="Multi-turn conversations, teacher-forced history: token F1, ROUGE-L",
    scorer=score_conversation, modes=("teacher-forced",), headline=(("teacher-forced", "token_f1", "Conv. token F1"),),
    max_new_tokens=256, rows=Rows("conversation", "conversation", None, conversation_items),
    metric_modules=("token_f1", "rouge"), order=60,
))
