"""CRC planners: one fixed multiple-choice query, the class full name as answer."""

from __future__ import annotations

from ..errors import InputError
from ..labels import CRC_CLASSES
from .base import PlanInput, RowPlan, planner, register_option, stratified_split
from .prompts import CRC_PAPER_QUERY, CRC_QUERY

register_option("crc_train_size", 7_180, "CRC training rows (stratified from NCT-CRC-HE-100K)")
register_option("crc_validation_size", 718, "CRC validation rows (stratified from NCT-CRC-HE-100K)")

VAL_7K = "CRC-VAL-HE-7K"
TRAIN_100K = ("NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM")


def _row(rec, split: str, query: str = CRC_QUERY) -> RowPlan:
    name = CRC_CLASSES[rec.fields["class_code"]]
    return RowPlan(
        id=f"crc/{rec.record_id}", source="crc", task="classification", split=split, record=rec,
        turns=(("user", query), ("assistant", name)), label=name, answer_type="closed",
    )


def _code(rec) -> str:
    return rec.fields["class_code"]


@planner("default", "crc")
def plan_default(p: PlanInput) -> list[RowPlan]:
    """Train/validation from NCT-CRC-HE-100K, test = all of CRC-VAL-HE-7K (disjoint patients)."""
    val7k = [r for r in p.records if r.subset == VAL_7K]
    big_subset = next((s for s in TRAIN_100K if any(r.subset == s for r in p.records)), None)
    rows: list[RowPlan] = []
    if big_subset:
        big = [r for r in p.records if r.subset == big_subset]
        train_n, val_n = int(p.options["crc_train_size"]), int(p.options["crc_validation_size"])
        if len(big) < train_n + val_n:
            val_n = min(val_n, max(1, len(big) // 10))
            p.ctx.note(f"crc: {big_subset} has {len(big)} images, fewer than the {train_n} train + "
                       f"{p.options['crc_validation_size']} validation asked; {val_n} go to validation, "
                       f"the other {len(big) - val_n} to train")
            train_n = len(big) - val_n
        parts = stratified_split(big, _code, {"validation": val_n, "train": train_n}, p.rng(big_subset))
        rows += [_row(r, "train") for r in parts["train"]]
        rows += [_row(r, "validation") for r in parts["validation"]]
        rows += [_row(r, "test") for r in val7k]
        if not val7k:
            p.ctx.note("crc: CRC-VAL-HE-7K not given, so CRC has no test rows")
    elif val7k:
        p.ctx.warn("crc: only CRC-VAL-HE-7K was given; it was split 80/10/10 (seeded, stratified). It is the "
                   "standard CRC test set, so scores on it are not comparable with published ones. "
                   "Add NCT-CRC-HE-100K for the standard setup.")
        n = len(val7k)
        n_val, n_test = round(n * 0.1), round(n * 0.1)
        parts = stratified_split(val7k, _code, {"test": n_test, "validation": n_val, "train": None}, p.rng("7k"))
        for split, recs in parts.items():
            rows += [_row(r, split) for r in recs]
    return rows


@planner("paper", "crc")
def plan_paper(p: PlanInput) -> list[RowPlan]:
    """Every CRC-VAL-HE-7K image once (the paper drew 7,180 times with replacement), the authors' query text."""
    val7k = [r for r in p.records if r.subset == VAL_7K]
    if not val7k:
        raise InputError("the paper recipe uses CRC-VAL-HE-7K, which was not found", file=p.source.path,
                         fix="download and unzip CRC-VAL-HE-7K.zip from Zenodo record 1214456")
    p.ctx.warn(f"paper recipe: the {len(val7k)} CRC-VAL-HE-7K images, the standard CRC test set, are training "
               "rows here; CRC scores of a model trained on this build are not comparable with published ones")
    return [_row(r, "train", CRC_PAPER_QUERY) for r in val7k]
