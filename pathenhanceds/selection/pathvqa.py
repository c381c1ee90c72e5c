"""PathVQA planners: one VQA row per question; closed iff the answer is yes/no."""

from __future__ import annotations

from ..errors import InputError
from ..schema import answer_type_for
from .base import PlanInput, RowPlan, planner

_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _row(rec, split: str) -> RowPlan:
    answer = rec.fields["answer"]
    kind = answer_type_for(answer)
    return RowPlan(
        id=f"pathvqa/{rec.record_id}", source="pathvqa", task="vqa", split=split, record=rec,
        turns=(("user", rec.fields["question"]), ("assistant", answer)),
        label=answer.strip().lower().rstrip(".") if kind == "closed" else None, answer_type=kind,
    )


@planner("default", "pathvqa")
def plan_default(p: PlanInput) -> list[RowPlan]:
    """The official train/val/test splits."""
    rows = [_row(r, _SPLITS[r.subset]) for r in p.records if r.subset in _SPLITS]
    if any(r.subset == "textbook" for r in p.records):
        p.ctx.note("pathvqa: the textbook subset (QA_pairs_vb.json) is used only by the paper recipe")
    if not rows:
        raise InputError("the default recipe uses the official PathVQA splits, which were not found",
                         file=p.source.path, fix="download pvqa/ (pickles + images) or the parquet mirror")
    return rows


@planner("paper", "pathvqa")
def plan_paper(p: PlanInput) -> list[RowPlan]:
    """The textbook subset, kept where BiomedCLIP's P(H&E) > 0.98 (scores from `--scores`)."""
    records = [r for r in p.records if r.subset == "textbook"]
    if not records:
        raise InputError("the paper recipe uses the PathVQA textbook subset (QA_pairs_vb.json), not found",
                         file=p.source.path, fix="download data/QA_pairs_vb.json and textbook_of_pathology_image.zip")
    if p.scores is None:
        p.ctx.warn("pathvqa: no --scores file, so the paper's BiomedCLIP H&E filter was not applied to the textbook "
                   "subset (run `pathinsight data score` first)")
    else:
        from ..filters import select_he

        selection = select_he(records, p.scores)
        images = len({r.fields["image_id"] for r in selection.kept})
        p.ctx.note(f"pathvqa: H&E filter ({selection.rule}) kept {len(selection.kept)} of {len(records)} QA pairs "
                   f"from {images} images (paper: 1,046 QA from 169 images)")
        records = selection.kept
    return [_row(r, "train") for r in records]
