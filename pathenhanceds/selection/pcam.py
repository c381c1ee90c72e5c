"""PCam planners: yes/no cancer questions."""

from __future__ import annotations

from ..errors import InputError
from ..labels import PCAM_LABELS, PCAM_NO, PCAM_YES
from .base import PlanInput, RowPlan, choose, planner, register_option, stratified_split
from .prompts import PCAM_CANCER_QUESTIONS, PCAM_PAPER_NEGATIVE_PROMPTS

register_option("pcam_train_size", 10_000, "PCam training rows (class-balanced, from the train file)")
register_option("pcam_validation_size", 2_000, "PCam validation rows (class-balanced, from the valid file)")
register_option("pcam_test_size", 2_000, "PCam test rows (class-balanced, from the test file)")
register_option("pcam_paper_size", 10_000, "paper recipe: first N patches of the PCam train file")

_SUBSET_FOR_SPLIT = {"train": "train", "validation": "valid", "test": "test"}


def _row(p: PlanInput, rec, split: str, question: str) -> RowPlan:
    yes = rec.fields["label"] == 1
    return RowPlan(
        id=f"pcam/{rec.record_id}", source="pcam", task="classification", split=split, record=rec,
        turns=(("user", question), ("assistant", PCAM_YES if yes else PCAM_NO)),
        label=PCAM_LABELS[int(yes)], answer_type="closed",
    )


@planner("default", "pcam")
def plan_default(p: PlanInput) -> list[RowPlan]:
    """Class-balanced samples of each official split; every patch gets a cancer question."""
    rows: list[RowPlan] = []
    for split, subset in _SUBSET_FOR_SPLIT.items():
        pool = [r for r in p.records if r.subset == subset]
        size = int(p.options[f"pcam_{split}_size"])
        if not pool:
            p.ctx.note(f"pcam: no {subset} file given, so PCam has no {split} rows")
            continue
        per_class = size // 2
        chosen = []
        for label in (0, 1):
            cls = [r for r in pool if r.fields["label"] == label]
            if len(cls) < per_class:
                p.ctx.note(f"pcam: {split} asks {per_class} patches of label {label}, the file has {len(cls)}; all used")
            chosen += stratified_split(cls, lambda r: "x", {"pick": per_class}, p.rng(split, str(label)))["pick"]
        chosen.sort(key=lambda r: r.locator[1:])
        rng = p.rng(split, "questions")
        rows += [_row(p, rec, split, choose(rng, PCAM_CANCER_QUESTIONS)) for rec in chosen]
    return rows


@planner("paper", "pcam")
def plan_paper(p: PlanInput) -> list[RowPlan]:
    """The paper's selection: first N train patches, label-dependent prompt pools (labels aligned)."""
    pool = [r for r in p.records if r.subset == "train"]
    if not pool:
        raise InputError("the paper recipe needs the PCam train file", file=p.source.path,
                         fix="download camelyonpatch_level_2_split_train_{x,y}.h5")
    size = int(p.options["pcam_paper_size"])
    if len(pool) < size:
        p.ctx.note(f"pcam: paper recipe asks the first {size} train patches, the file has {len(pool)}; all used")
    p.ctx.warn(f"paper recipe: the first {min(size, len(pool))} PCam train-file patches are training rows here; "
               "some published evaluations draw their PCam test patches from the train file, so check a "
               "benchmark's patches against this build (--dedup-against) before comparing scores")
    rng = p.rng("paper")
    rows = []
    for rec in pool[:size]:
        prompts = PCAM_CANCER_QUESTIONS if rec.fields["label"] == 1 else PCAM_PAPER_NEGATIVE_PROMPTS
        rows.append(_row(p, rec, "train", choose(rng, prompts)))
    return rows
