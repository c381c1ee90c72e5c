"""Planners of the other public pathology instruction sets: PathGen-Instruct, Quilt-Instruct, PathInstruct, PMC-VQA.

The dialogue sets give one `conversation` row per dialogue with every turn kept (the image goes in the
first user turn). PMC-VQA gives one `vqa` row per multiple-choice question. Splits are seeded hashes
of the unit that must stay together (TCGA patient, YouTube video, PubMed article), never of row
order; sizes are options (`--<source>-max-records`, a seeded, order-independent choice).
"""

from __future__ import annotations

from collections import Counter

from ..errors import InputError
from ..sources.base import SourceRecord
from ..sources.pmc_vqa import LETTERS, is_pathology
from .base import PlanInput, RowPlan, hash_fraction, keep_at_most, planner, register_option, split_by_hash
from .llava_med import held_out_fractions
from .pathgen import patient_fractions, patient_split

DIALOGUE_SOURCES = ("pathgen_instruct", "quilt_instruct", "pathinstruct")

for _source in (*DIALOGUE_SOURCES, "pmc_vqa"):
    register_option(f"{_source}_max_records", 0,
                    f"{_source}: keep at most this many records (a seeded, order-independent choice; 0: all)")
for _source, _share in (("quilt_instruct", "YouTube videos"), ("pathinstruct", "PubMed articles")):
    register_option(f"{_source}_validation_fraction", 0.02, f"{_source}: share of {_share} held out for validation")
    register_option(f"{_source}_test_fraction", 0.02, f"{_source}: share of {_share} held out for test")
register_option("pmc_vqa_validation_fraction", 0.05,
                "pmc_vqa: share of PubMed articles of the official train file held out for validation")
register_option("pmc_vqa_subset", "pathology",
                "pmc_vqa: 'pathology' (the keyword rule of docs/instruction_sets.md) or 'all' questions",
                choices=("pathology", "all"))
register_option("pmc_vqa_version", "1", "pmc_vqa: metafiles to read: '1' (train.csv/test.csv) or '2' "
                "(train_2.csv/test_2.csv)", choices=("1", "2"))

PMC_VQA_SUFFIX = "Answer with the letter of the correct option."


def _dialogue_row(p: PlanInput, rec: SourceRecord, split: str) -> RowPlan:
    return RowPlan(id=f"{p.source.name}/{rec.record_id}", source=p.source.name, task="conversation", split=split,
                   record=rec, turns=tuple(rec.fields["turns"]))


def _require(p: PlanInput, records: list[SourceRecord], what: str) -> list[SourceRecord]:
    if not records:
        raise InputError(f"{p.source.name}: no {what} with an image", file=p.source.path,
                         fix="check the JSON/CSV files and that the images are in the folders named in "
                             "docs/instruction_sets.md")
    return records


@planner("xl", "pathgen_instruct")
def plan_pathgen_instruct(p: PlanInput) -> list[RowPlan]:
    """Split by TCGA patient with the `pathgen` source's hash and fractions (a patient shares one split in both)."""
    validation, test = patient_fractions(p)
    records = keep_at_most(p, _require(p, p.records, "dialogue"), "pathgen_instruct_max_records")
    return [_dialogue_row(p, rec, patient_split(rec.fields["group"], p.seed, validation, test)) for rec in records]


def _plan_by_group(p: PlanInput) -> list[RowPlan]:
    fractions = held_out_fractions(p, p.source.name)
    records = keep_at_most(p, _require(p, p.records, "dialogue"), f"{p.source.name}_max_records")
    return [_dialogue_row(p, rec, split_by_hash(f"{p.source.name}/{rec.fields['group']}", p.seed, fractions))
            for rec in records]


@planner("xl", "quilt_instruct")
def plan_quilt_instruct(p: PlanInput) -> list[RowPlan]:
    """Split by a seeded hash of the YouTube video, so the frames of one video never straddle splits."""
    return _plan_by_group(p)


@planner("xl", "pathinstruct")
def plan_pathinstruct(p: PlanInput) -> list[RowPlan]:
    """Split by a seeded hash of the PubMed Central article, so the figures of one paper never straddle splits."""
    return _plan_by_group(p)


def pmc_vqa_prompt(question: str, choices: tuple[str, ...]) -> str:
    """The user turn of a PMC-VQA row: the question, the four lettered options, the answer format."""
    options = "\n".join(f"{letter}: {text}" for letter, text in zip(LETTERS, choices, strict=True))
    return f"{question}\nOptions:\n{options}\n{PMC_VQA_SUFFIX}"


@planner("xl", "pmc_vqa")
def plan_pmc_vqa(p: PlanInput) -> list[RowPlan]:
    """The chosen version's questions (pathology part by default); official test kept as test; validation
    carved from train by a seeded hash of the article. `test_clean.csv` (a subset of test) is not used."""
    version = str(p.options["pmc_vqa_version"])
    subsets = {"train": "train", "test": "test"} if version == "1" else {"train_2": "train", "test_2": "test"}
    chosen = [r for r in p.records if r.subset in subsets]
    if any(r.subset == "test_clean" for r in p.records):
        p.ctx.note("pmc_vqa: test_clean.csv not used (a subset of test.csv, which is the test split)")
    if not chosen:
        raise InputError(f"pmc_vqa: version {version} metafiles ({', '.join(f'{s}.csv' for s in subsets)}) hold no "
                         "question with a figure", file=p.source.path,
                         fix="download those CSV files and figures, or pass --pmc-vqa-version 1|2")
    if p.options["pmc_vqa_subset"] == "pathology":
        kept = [r for r in chosen if is_pathology(r.fields)]
        by_subset = Counter(r.subset for r in kept)
        p.ctx.note(f"pmc_vqa: the pathology rule kept {len(kept)} of {len(chosen)} questions ("
                   + ", ".join(f"{by_subset[s]} {s}" for s in subsets) + ")")
        chosen = _require(p, kept, "pathology question (see the rule in docs/instruction_sets.md)")
    chosen = keep_at_most(p, chosen, "pmc_vqa_max_records")
    validation = float(p.options["pmc_vqa_validation_fraction"])
    rows = []
    for rec in chosen:
        split = subsets[rec.subset]
        if split == "train" and hash_fraction(f"pmc_vqa/{rec.fields['group']}", p.seed) < validation:
            split = "validation"
        answer = f"{rec.fields['answer_letter']}: {rec.fields['answer']}"
        rows.append(RowPlan(id=f"pmc_vqa/{rec.record_id}", source="pmc_vqa", task="vqa", split=split, record=rec,
                            turns=(("user", pmc_vqa_prompt(rec.fields["question"], rec.fields["choices"])),
                                   ("assistant", answer)),
                            answer_type="closed"))
    return rows
