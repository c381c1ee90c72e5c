"""Bladder report planners: one captioning row per (image, caption)."""

from __future__ import annotations

from .base import PlanInput, RowPlan, choose, planner, register_option, split_by_hash
from .prompts import BLADDER_ALL_QUERIES, BLADDER_GRADES, BLADDER_LESION_QUERIES, BLADDER_NORMAL_QUERIES

register_option("bladder_validation_fraction", 0.05, "share of train_annotation images held out for validation")


def _rows(p: PlanInput, rec, split: str, queries_for) -> list[RowPlan]:
    """Graded images (1, 2) give captions 1..4, normal ones caption 0; label 3 is dropped."""
    label = rec.fields["label"]
    if label == 3:
        return []
    captions = rec.fields["captions"]
    indices = [0] if label == 0 else list(range(1, min(5, len(captions))))
    rng = p.rng("query", rec.record_id)
    return [
        RowPlan(
            id=f"pathologist_level/{rec.record_id}/{k}", source="pathologist_level", task="captioning",
            split=split, record=rec, turns=(("user", choose(rng, queries_for(label))), ("assistant", captions[k])),
            label=BLADDER_GRADES[label],
        )
        for k in indices
        if k < len(captions)
    ]


@planner("default", "pathologist_level")
def plan_default(p: PlanInput) -> list[RowPlan]:
    frac = float(p.options["bladder_validation_fraction"])
    rows: list[RowPlan] = []
    for rec in p.records:
        if rec.subset == "test":
            split = "test"
        else:  # by image, so the captions of one image never straddle splits
            split = split_by_hash(rec.record_id, p.seed, {"validation": frac, "train": 1 - frac})
        rows += _rows(p, rec, split, lambda _label: BLADDER_ALL_QUERIES)
    return rows


@planner("paper", "pathologist_level")
def plan_paper(p: PlanInput) -> list[RowPlan]:
    """Train and test annotations, label-dependent query lists (as the paper did)."""
    rows: list[RowPlan] = []
    for rec in p.records:
        rows += _rows(p, rec, "train",
                      lambda label: BLADDER_NORMAL_QUERIES if label == 0 else BLADDER_LESION_QUERIES)
    return rows
