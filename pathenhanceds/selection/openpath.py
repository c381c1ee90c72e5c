"""OpenPath planners: one captioning row per (tweet, image) with a generic caption instruction."""

from __future__ import annotations

import math
from collections import Counter

from ..errors import InputError
from ..sources.base import SourceRecord
from ..sources.openpath import ID_CSV, drop_reason
from .base import PlanInput, RowPlan, choose, planner, register_option, split_by_hash
from .llava_med import held_out_fractions
from .prompts import CAPTION_BRIEF, CAPTION_DETAILED

register_option("openpath_validation_fraction", 0.05, "share of OpenPath tweets held out for validation")
register_option("openpath_test_fraction", 0.05, "share of OpenPath tweets held out for test")
register_option("openpath_min_words", 3, "OpenPath captions with fewer words (after cleaning) are dropped")
register_option("openpath_detailed_min_words", 30,
                "OpenPath captions with at least this many words get a 'detailed' instruction, others a 'brief' one")
register_option("openpath_unlisted", "skip",
                f"tweets of the hydrated file missing from {ID_CSV}: 'skip' or 'keep'", choices=("skip", "keep"))
register_option("openpath_top_k", 20_000,
                "paper recipe: keep the K tweets with the highest image-text 'similarity' score (0: keep all)")

_REASONS = {"empty": "empty after cleaning", "too_short": "too short", "question_only": "question-only",
            "unlisted": f"not in {ID_CSV}"}


def select(p: PlanInput) -> list[SourceRecord]:
    """Records whose cleaned text can be a caption (and that are listed, unless kept by option)."""
    min_words = int(p.options["openpath_min_words"])
    unlisted = str(p.options["openpath_unlisted"])
    if unlisted not in ("skip", "keep"):
        raise InputError(f"openpath_unlisted must be 'skip' or 'keep', not {unlisted!r}",
                         fix="pass --openpath-unlisted skip|keep")
    dropped: Counter[str] = Counter()
    kept = []
    for rec in p.records:
        reason = drop_reason(rec.fields["caption"], min_words)
        if reason is None and rec.fields["listed"] is False and unlisted == "skip":
            reason = "unlisted"
        if reason:
            dropped[reason] += 1
        else:
            kept.append(rec)
    if dropped:
        p.ctx.note("openpath: dropped " + ", ".join(f"{dropped[r]} {text}" for r, text in _REASONS.items() if dropped[r])
                   + f" (minimum {min_words} words)")
    if not kept:
        raise InputError("no OpenPath tweet is left after cleaning and the id check", file=p.source.path,
                         fix=f"check the hydrated JSONL's text and {ID_CSV} (or pass --openpath-unlisted keep)")
    return kept


def _row(p: PlanInput, rec: SourceRecord, split: str) -> RowPlan:
    caption = rec.fields["caption"]
    detailed = len(caption.split()) >= int(p.options["openpath_detailed_min_words"])
    query = choose(p.rng("query", rec.record_id), CAPTION_DETAILED if detailed else CAPTION_BRIEF)
    return RowPlan(id=f"openpath/{rec.record_id}", source="openpath", task="captioning", split=split, record=rec,
                   turns=(("user", query), ("assistant", caption)))


def top_k_by_similarity(p: PlanInput, records: list[SourceRecord]) -> list[SourceRecord]:
    """The paper's top-K image-text similarity selection, when scores are present.

    Scores come from a record's `similarity` field (the hydrated JSONL may carry one; an image
    scorer may fill it in). Without any score the selection cannot be made and is noted.
    """
    k = int(p.options.get("openpath_top_k") or 0)
    if k <= 0:
        return records
    if p.scores is not None:
        return _top_k_from_scores(p, records, k)
    # NaN/infinite scores count as missing: they would scramble the ranking.
    scored = [r for r in records if isinstance(r.fields.get("similarity"), int | float)
              and math.isfinite(r.fields["similarity"])]
    if not scored:
        p.ctx.note(f"openpath: no 'similarity' scores, so the paper's top-{k} selection was not applied")
        return records
    if len(scored) < len(records):
        p.ctx.note(f"openpath: {len(records) - len(scored)} tweet(s) without a 'similarity' score left out")
    order = {id(r): i for i, r in enumerate(records)}
    best = sorted(scored, key=lambda r: (-r.fields["similarity"], order[id(r)]))[:k]
    p.ctx.note(f"openpath: kept the top {len(best)} of {len(scored)} tweets by image-text similarity")
    return sorted(best, key=lambda r: order[id(r)])


def _top_k_from_scores(p: PlanInput, records: list[SourceRecord], k: int) -> list[SourceRecord]:
    """`--scores`: top K by BiomedCLIP image-text similarity, then the H&E filter (the paper's
    "H&E emphasised"; its exact rule is unpublished)."""
    from ..filters import select_he, select_top_k

    scored = sum(p.scores.for_record(r.source, r.record_id) is not None for r in records)
    if records and not scored:  # silently keeping 0 rows would hide a scores file made for other sources
        sources = sorted({row.source for row in p.scores.rows})
        raise InputError(
            f"the --scores file has no score for any of the {len(records)} OpenPath tweets "
            f"(it scores: {', '.join(sources) or 'nothing'})", file=p.scores.path,
            fix="score OpenPath too (`pathinsight data score --source openpath=... --output scores.parquet`, with "
                "every source of the build), or pass --openpath-top-k 0 to keep every tweet without the top-K filter")
    if scored < len(records):
        p.ctx.warn(f"openpath: the --scores file has no score for {len(records) - scored} of {len(records)} tweets; "
                   "they were left out of the top-K selection (re-score with the same --source paths as the build)")
    top = select_top_k(records, p.scores, k, by="similarity", missing="drop")
    he = select_he(top.kept, p.scores, missing="drop")
    p.ctx.note(f"openpath: top-{k} by image-text similarity kept {len(top.kept)} of {len(records)} tweets "
               f"({len(top.missing)} unscored); the H&E filter ({he.rule}) kept {len(he.kept)}")
    return he.kept


@planner("default", "openpath")
def plan_default(p: PlanInput) -> list[RowPlan]:
    """Split by a seeded hash of the tweet (tweets sharing a byte-identical image form one group)."""
    fractions = held_out_fractions(p, "openpath")
    return [_row(p, rec, split_by_hash(f"openpath/{rec.fields['group']}", p.seed, fractions)) for rec in select(p)]


@planner("paper", "openpath")
def plan_paper(p: PlanInput) -> list[RowPlan]:
    """Cleaned captions, top-K by similarity when scores exist, all in train."""
    return [_row(p, rec, "train") for rec in top_k_by_similarity(p, select(p))]
