"""PathGen-1.6M planners: captions of slide patches, split by TCGA patient, one instruction pool of their own.

Records are resolved to slides here (the planner sees the options): absent slides are skipped and
counted, patches outside their slide are record errors. Plans come out grouped by slide (then y, x),
so each slide is opened once by whichever executor cuts them.
"""

from __future__ import annotations

from ..errors import InputError
from ..sources.pathgen import IMAGE_FORMATS, PATCH_SIZE
from .base import PlanInput, RowPlan, hash_fraction, keep_at_most, planner, register_option, split_by_hash

register_option("pathgen_slides", "", "PathGen: folder holding the TCGA slides (any depth; empty: DIR/slides/)")
register_option("pathgen_patch_size", PATCH_SIZE, "PathGen: patch side in level-0 pixels (PathGen cut 672)")
register_option("pathgen_image_format", "png",
                "PathGen: stored patch format (png is lossless; jpeg q95 4:4:4 is ~10x faster to encode)",
                choices=IMAGE_FORMATS)
register_option("pathgen_max_records", 0,
                "PathGen: keep at most this many records (a seeded, order-independent choice; 0: all)")
register_option("pathgen_validation_fraction", 0.01, "PathGen: fraction of TCGA patients held out for validation")
register_option("pathgen_test_fraction", 0.01, "PathGen: fraction of TCGA patients held out for test")

# Our own pool (PathGen released captions without instructions): requests for a description of a
# high-magnification H&E patch, none hinting at the content.
PATHGEN_CAPTION_QUERIES = (
    "Describe the histopathological features of this patch.",
    "What does this H&E-stained tissue patch show?",
    "Provide a detailed description of the tissue in this whole-slide image patch.",
    "Describe the cells, tissue architecture and any pathological changes visible in this image.",
    "Give a pathology report-style description of this image patch.",
    "What morphological findings can you identify in this histology patch?",
    "Characterise the tissue and cellular features seen in this image.",
    "Summarise the microscopic findings in this patch of a diagnostic slide.",
    "Examine this histopathology image and describe what you observe.",
    "Describe this tissue section, including any features that suggest a diagnosis.",
)


def query_for(record_id: str, seed: int) -> str:
    """The instruction of a record: a seeded hash of its id, so it does not depend on record order."""
    k = int(hash_fraction(f"pathgen-query/{record_id}", seed) * len(PATHGEN_CAPTION_QUERIES))
    return PATHGEN_CAPTION_QUERIES[min(k, len(PATHGEN_CAPTION_QUERIES) - 1)]


def patient_split(patient: str, seed: int, validation: float, test: float) -> str:
    """train / validation / test of a TCGA patient (every slide and patch of a patient in one split)."""
    return split_by_hash(f"pathgen-patient/{patient}", seed,
                         {"test": test, "validation": validation, "train": 1.0 - test - validation})


def patient_fractions(p: PlanInput) -> tuple[float, float]:
    """The (validation, test) shares of TCGA patients; they must leave some patients for train."""
    validation = float(p.options["pathgen_validation_fraction"])
    test = float(p.options["pathgen_test_fraction"])
    if validation + test >= 1.0:
        raise InputError("pathgen validation + test fractions must leave some patients for train",
                         fix="lower --pathgen-validation-fraction / --pathgen-test-fraction")
    return validation, test


@planner("default", "pathgen")
def plan_default(p: PlanInput) -> list[RowPlan]:
    """Every record whose slide is present (or a seeded subset), split by patient, grouped by slide."""
    validation, test = patient_fractions(p)
    # The records with the smallest seeded hash: the same choice whatever the file order.
    records = keep_at_most(p, p.records, "pathgen_max_records")
    resolution = p.source.resolve(records, p.ctx, patch_size=int(p.options["pathgen_patch_size"]),
                                  image_format=p.options["pathgen_image_format"],
                                  slides=p.options["pathgen_slides"] or None)
    ordered = sorted(resolution.records, key=lambda r: (r.locator[1], r.fields["y"], r.fields["x"], r.record_id))
    return [
        RowPlan(
            id=f"pathgen/{rec.record_id}", source="pathgen", task="captioning",
            split=patient_split(rec.fields["patient"], p.seed, validation, test), record=rec,
            turns=(("user", query_for(rec.record_id, p.seed)), ("assistant", rec.fields["caption"])),
        )
        for rec in ordered
    ]
