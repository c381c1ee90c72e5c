"""LLaVA-Med planners: one `conversation` row per selected dialogue, all turns kept."""

from __future__ import annotations

from ..errors import InputError
from ..sources.base import SourceRecord
from ..sources.llava_med import DOMAINS
from .base import PlanInput, RowPlan, planner, register_option, split_by_hash

register_option("llava_med_validation_fraction", 0.05,
                "share of LLaVA-Med papers (PMIDs) held out for validation")
register_option("llava_med_test_fraction", 0.05, "share of LLaVA-Med papers (PMIDs) held out for test")
register_option("llava_med_domains", "histology",
                f"comma-separated LLaVA-Med domains to keep ({', '.join(DOMAINS)})")

PAPER_DIALOGUES, PAPER_QA_PAIRS = 7_691, 28_710


def wanted_domains(text: str) -> set[str]:
    """The set of LLaVA-Med domains named in a comma-separated option value; unknown names are an `InputError`."""
    wanted = {d.strip() for d in str(text).split(",") if d.strip()}
    unknown = wanted - set(DOMAINS)
    if not wanted or unknown:
        raise InputError(f"llava_med_domains {text!r} names unknown domains {sorted(unknown)}",
                         fix=f"use a comma-separated subset of: {', '.join(DOMAINS)}")
    return wanted


def select(p: PlanInput) -> list[SourceRecord]:
    """Dialogues of the wanted domains; notes how many were kept and how many had no domain."""
    wanted = wanted_domains(p.options["llava_med_domains"])
    unknown = [r for r in p.records if r.fields["domains"] is None]
    chosen = [r for r in p.records if r.fields["domains"] is not None and wanted & set(r.fields["domains"])]
    if unknown:
        p.ctx.note(f"llava_med: {len(unknown)} dialogue(s) have no domain (not in the fig-captions file); left out")
    pairs = sum(len(r.fields["turns"]) // 2 for r in chosen)
    p.ctx.note(f"llava_med: kept {len(chosen)} of {len(p.records)} dialogues with images "
               f"({'/'.join(sorted(wanted))}), {pairs} QA pairs; the paper kept {PAPER_DIALOGUES:,} dialogues, "
               f"{PAPER_QA_PAIRS:,} QA pairs")
    restored = sum(bool(r.fields.get("no_image_token")) for r in chosen)  # counted after the domain filter
    p.ctx.count("llava_med", "no_image_token", restored,
                "kept dialogues whose first QA pair LLaVA-Med's clean_conv had dropped (no <image> token); "
                "image put at the start of the first remaining user turn")
    if restored:
        p.ctx.note(f"llava_med: {restored} kept dialogue(s) had no <image> token (LLaVA-Med's post-processing "
                   "dropped their first QA pair); the image was put at the start of the first remaining user turn")
    if not chosen:
        raise InputError(f"no LLaVA-Med dialogue of domain {'/'.join(sorted(wanted))} has an image",
                         file=p.source.path, fix="check images/<pair_id>.jpg and the instruct files' domains")
    return chosen


def _row(rec: SourceRecord, split: str) -> RowPlan:
    return RowPlan(id=f"llava_med/{rec.record_id}", source="llava_med", task="conversation", split=split,
                   record=rec, turns=tuple(rec.fields["turns"]))


def held_out_fractions(p: PlanInput, prefix: str) -> dict[str, float]:
    """{"validation": v, "test": t, "train": rest} from `<prefix>_validation_fraction` / `_test_fraction`."""
    val, test = float(p.options[f"{prefix}_validation_fraction"]), float(p.options[f"{prefix}_test_fraction"])
    if val < 0 or test < 0 or val + test >= 1:
        raise InputError(f"{prefix}_validation_fraction + {prefix}_test_fraction must be >= 0 and < 1 "
                         f"(got {val} + {test})", fix="pass fractions such as 0.05")
    return {"validation": val, "test": test, "train": 1 - val - test}


@planner("default", "llava_med")
def plan_default(p: PlanInput) -> list[RowPlan]:
    """Split by a seeded hash of the paper (PMID), so the figures of one paper never straddle splits.

    Papers that share a byte-identical image are one group (the reader links them).
    """
    fractions = held_out_fractions(p, "llava_med")
    return [_row(rec, split_by_hash(f"llava_med/{rec.fields['group']}", p.seed, fractions)) for rec in select(p)]


@planner("paper", "llava_med")
def plan_paper(p: PlanInput) -> list[RowPlan]:
    """Every histology dialogue of the given files, all in train."""
    return [_row(rec, "train") for rec in select(p)]
