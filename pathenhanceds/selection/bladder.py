"""Bladder report planners: one captioning row per (image, caption)."""

from __future__ import annotations

from ..labels import BLADDER_GRADES
from .base import PlanInput, RowPlan, choose, planner, register_option, split_by_hash
from .prompts import BLADDER_ALL_QUERIES, BLADDER_LESION_QUERIES, BLADDER_NORMAL_QUERIES

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


def _count_left_out(p: PlanInput, rows: list[RowPlan]) -> None:
    """Count label-3 images and the captions no row uses (manifest `selection_counts`, card counts)."""
    label3 = [r for r in p.records if r.fields["label"] == 3]
    captions = sum(len(r.fields["captions"]) for r in p.records)
    p.ctx.count("pathologist_level", "label_3_images", len(label3),
                "images with label 3 (insufficient information), left out")
    p.ctx.count("pathologist_level", "unused_captions", captions - len(rows),
                "captions not used (all of label-3 images, caption 0 of graded images, captions 1-4 of normal "
                f"images), of {captions}")


@planner("default", "pathologist_level")
def plan_default(p: PlanInput) -> list[RowPlan]:
    """Test annotations are test; train annotations split by image into train/validation; label-independent queries."""
    frac = float(p.options["bladder_validation_fraction"])
    rows: list[RowPlan] = []
    for rec in p.records:
        if rec.subset == "test":
            split = "test"
        else:  # by image, so the captions of one image never straddle splits
            split = split_by_hash(rec.record_id, p.seed, {"validation": frac, "train": 1 - frac})
        rows += _rows(p, rec, split, lambda _label: BLADDER_ALL_QUERIES)
    _count_left_out(p, rows)
    return rows


@planner("paper", "pathologist_level")
def plan_paper(p: PlanInput) -> list[RowPlan]:
    """Train and test annotations, label-dependent query lists (as the paper did)."""
    rows: list[RowPlan] = []
    for rec in p.records:
        rows += _rows(p, rec, "train",
                      lambda label: BLADDER_NORMAL_QUERIES if label == 0 else BLADDER_LESION_QUERIES)
    _count_left_out(p, rows)
    test_images = sum(rec.subset == "test" for rec in p.records)
    if test_images:
        p.ctx.warn(f"paper recipe: the {test_images} image(s) of the bladder test annotations (test_annotation.json, "
                   "the dataset's official test set) are training rows here; do not evaluate a model trained on "
                   "this build on them")
    return rows
