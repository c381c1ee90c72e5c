"""Recipe rules on fixtures: selection, prompts, splits, leakage, determinism."""

from __future__ import annotations

import io
from collections import Counter

import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.raw_fixtures import (
    bladder_entry,
    decode_pcam,
    write_bladder,
    write_crc,
    write_pcam,
    write_pvqa,
    write_textbook,
)

from pathenhanceds import build
from pathenhanceds.errors import InputError
from pathenhanceds.labels import CRC_CLASSES, PCAM_NO, PCAM_YES
from pathenhanceds.selection.prompts import (
    BLADDER_ALL_QUERIES,
    BLADDER_LESION_QUERIES,
    BLADDER_NORMAL_QUERIES,
    PCAM_CANCER_QUESTIONS,
    PCAM_PAPER_NEGATIVE_PROMPTS,
)


def rows_of(out, config, split):
    files = sorted((out / "data" / config).glob(f"{split}-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def user_text(row):
    return next(p["text"] for p in row["messages"][0]["content"] if p["type"] == "text")


def answer(row):
    return row["messages"][1]["content"][0]["text"]


@pytest.fixture()
def pcam_dir(tmp_path):
    labels = {"train": [i % 3 == 0 for i in range(60)], "valid": [i % 2 for i in range(20)],
              "test": [i % 2 for i in range(20)]}
    return write_pcam(tmp_path / "pcam", {k: [int(v) for v in ys] for k, ys in labels.items()})


def test_pcam_default_balanced_and_question_independent_of_label(pcam_dir, tmp_path):
    out = build({"pcam": pcam_dir}, tmp_path / "out",
                options={"pcam_train_size": 30, "pcam_validation_size": 10, "pcam_test_size": 10}).output
    train = rows_of(out, "classification", "train")
    assert Counter(r["label"] for r in train) == {"yes": 15, "no": 15}
    for r in train:
        index, label = decode_pcam(Image.open(io.BytesIO(r["images"][0]["bytes"])))
        assert r["id"] == f"pcam/train_{index:06d}"
        assert r["label"] == ("yes" if label else "no")  # aligned through the pixels
        assert answer(r) == (PCAM_YES if label else PCAM_NO)
        assert user_text(r) in PCAM_CANCER_QUESTIONS  # the same pool for both labels
    questions_by_label = {lab: {user_text(r) for r in train if r["label"] == lab} for lab in ("yes", "no")}
    assert questions_by_label["no"] - set(PCAM_CANCER_QUESTIONS) == set()
    assert len(rows_of(out, "classification", "validation")) == 10
    assert {r["id"].split("/")[1][:4] for r in rows_of(out, "classification", "test")} == {"test"}


def test_pcam_paper_first_n_with_label_pools(pcam_dir, tmp_path):
    out = build({"pcam": pcam_dir}, tmp_path / "out", recipe="paper", options={"pcam_paper_size": 25}).output
    train = rows_of(out, "classification", "train")
    assert [r["id"] for r in train] == [f"pcam/train_{i:06d}" for i in range(25)]
    for r in train:
        _, label = decode_pcam(Image.open(io.BytesIO(r["images"][0]["bytes"])))
        pool = PCAM_CANCER_QUESTIONS if label else PCAM_PAPER_NEGATIVE_PROMPTS
        assert user_text(r) in pool and answer(r) == (PCAM_YES if label else PCAM_NO)
    assert not (out / "data" / "classification" / "test-00000-of-00001.parquet").exists()


def test_sizes_larger_than_source_use_all_and_say_so(pcam_dir, tmp_path):
    result = build({"pcam": pcam_dir}, tmp_path / "out")
    assert any("all used" in n for n in result.manifest["notes"])
    assert "all used" in (result.output / "README.md").read_text()


def test_crc_default_uses_each_image_once_and_keeps_val7k_for_test(tmp_path):
    root = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 4, "TUM": 3})
    write_crc(root, "NCT-CRC-HE-100K", {c: 10 for c in ("ADI", "LYM", "TUM")})
    out = build({"crc": root}, tmp_path / "out",
                options={"crc_train_size": 15, "crc_validation_size": 6}).output
    train, val, test = (rows_of(out, "classification", s) for s in ("train", "validation", "test"))
    ids = [r["id"] for r in train + val + test]
    assert len(ids) == len(set(ids)) == 15 + 6 + 7
    assert {r["id"].split("/")[1] for r in test} == {"CRC-VAL-HE-7K"}
    assert {r["id"].split("/")[1] for r in train + val} == {"NCT-CRC-HE-100K"}
    assert Counter(r["label"] for r in val) == {"Adipose": 2, "Lymphocytes": 2, "Colorectal Adenocarcinoma Epithelium": 2}
    for r in train:
        assert answer(r) == r["label"] == CRC_CLASSES[r["id"].split("/")[2].split("-")[0]]


def test_crc_only_val7k_is_split_with_a_card_warning(tmp_path):
    root = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {c: 10 for c in ("ADI", "MUC", "STR")})
    result = build({"crc": root}, tmp_path / "out")
    counts = result.counts["classification"]
    assert {s: counts[s]["crc"] for s in counts} == {"train": 24, "validation": 3, "test": 3}
    assert "only CRC-VAL-HE-7K" in (result.output / "README.md").read_text()


def test_crc_paper_all_val7k_once(tmp_path):
    root = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 5, "NORM": 4})
    write_crc(root, "NCT-CRC-HE-100K", {"ADI": 3})
    result = build({"crc": root}, tmp_path / "out", recipe="paper")
    train = rows_of(result.output, "classification", "train")
    assert len(train) == len({r["image_sha256"][0] for r in train}) == 9
    card = (result.output / "README.md").read_text()
    assert "standard test sets" in card


def _bladder(tmp_path):
    train = {f"tr_{i}": bladder_entry(i % 4) for i in range(40)}
    test = {f"te_{i}": bladder_entry(i % 4) for i in range(8)}
    return write_bladder(tmp_path / "bladder", {"train": train, "test": test})


def test_bladder_default_caption_rules_and_image_grouped_splits(tmp_path):
    result = build({"pathologist_level": _bladder(tmp_path)}, tmp_path / "out", seed=3,
                   options={"bladder_validation_fraction": 0.25})
    rows = {s: rows_of(result.output, "captioning", s) for s in ("train", "validation", "test")}
    images = {s: {r["id"].rsplit("/", 1)[0] for r in rows[s]} for s in rows}
    assert not images["train"] & images["validation"]
    assert {i.split("/")[1][:2] for i in images["test"]} == {"te"}
    for r in rows["train"] + rows["validation"] + rows["test"]:
        k = int(r["id"].rsplit("/", 1)[1])
        assert r["label"] in ("normal", "low grade", "high grade")
        assert (k == 0) == (r["label"] == "normal") and k <= 4
        assert answer(r).startswith(f"cap{k} ")
        assert user_text(r) in BLADDER_ALL_QUERIES
    # 6 test images keep labels 0-2: 2 normal (1 row each) + 4 graded (4 rows each)
    assert len(rows["test"]) == 2 + 4 * 4


def test_bladder_paper_keeps_label_dependent_queries(tmp_path):
    result = build({"pathologist_level": _bladder(tmp_path)}, tmp_path / "out", recipe="paper")
    train = rows_of(result.output, "captioning", "train")
    assert len(train) == (10 + 2) * 1 + (20 + 4) * 4  # normal: caption 0; graded: captions 1-4; label 3 dropped
    for r in train:
        assert user_text(r) in (BLADDER_NORMAL_QUERIES if r["label"] == "normal" else BLADDER_LESION_QUERIES)


def test_pathvqa_default_official_splits_and_answer_types(tmp_path):
    root = write_pvqa(tmp_path / "pvqa", {"train": [("train_0001", "q", "yes"), ("train_0001", "q2", "fibrosis")],
                                          "val": [("val_0002", "q", "No")], "test": [("test_0003", "q", "no")]})
    result = build({"pathvqa": root}, tmp_path / "out")
    train = rows_of(result.output, "vqa", "train")
    assert [(r["answer_type"], r["label"]) for r in train] == [("closed", "yes"), ("open", None)]
    assert rows_of(result.output, "vqa", "validation")[0]["answer_type"] == "closed"


def test_pathvqa_paper_uses_textbook(tmp_path):
    root = write_textbook(tmp_path / "pvqa", [("img_1", "q", "yes"), ("Fig.3", "q", "cells")])
    result = build({"pathvqa": root}, tmp_path / "out", recipe="paper")
    assert result.counts == {"vqa": {"train": {"pathvqa": 2}}}
    with pytest.raises(InputError, match="official PathVQA splits"):
        build({"pathvqa": root}, tmp_path / "out2")


def test_duplicate_across_splits_removed_from_train_and_reported(tmp_path):
    # the same image in the official train and test splits
    root = write_pvqa(tmp_path / "pvqa", {"train": [("train_0001", "q", "yes"), ("train_0002", "q", "no")],
                                          "test": [("test_0001", "q", "no")]})
    (root / "pvqa/images/test/test_0001.jpg").write_bytes((root / "pvqa/images/train/train_0001.jpg").read_bytes())
    result = build({"pathvqa": root}, tmp_path / "out")
    assert [r["id"] for r in rows_of(result.output, "vqa", "train")] == ["pathvqa/train/000001"]
    dedup = result.manifest["dedup"]
    assert dedup["rows_removed_total"] == 1 and dedup["exact_groups_across_splits"] == 1
    assert dedup["removed"] == [{"id": "pathvqa/train/000000",
                                 "reason": "exact duplicate of test image pathvqa/test/000000 (pathvqa)"}]
    assert result.manifest["split_overlap"] == []
    assert "pathvqa/train/000000" in (result.output / "README.md").read_text()


def test_image_planted_in_two_sources_is_removed_from_train(tmp_path):
    """A CRC test image reused as a bladder train image: cross-source leakage."""
    crc = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 2})
    write_crc(crc, "NCT-CRC-HE-100K", {"ADI": 20})
    bladder = _bladder(tmp_path)
    from pathenhanceds.images import payload_from_file

    test_png = payload_from_file(crc / "CRC-VAL-HE-7K" / "ADI" / "ADI-CRC0001.tif").data
    (bladder / "Report" / "Images" / "tr_1.png").write_bytes(test_png)  # tr_1 has label 1: 4 train/val rows
    result = build({"crc": crc, "pathologist_level": bladder}, tmp_path / "out",
                   options={"bladder_validation_fraction": 0.0})
    removed = result.manifest["dedup"]["removed"]
    assert [r["id"] for r in removed] == [f"pathologist_level/tr_1/{k}" for k in range(1, 5)]
    assert all("test image crc/CRC-VAL-HE-7K/ADI-CRC0001 (crc)" in r["reason"] for r in removed)
    assert result.manifest["dedup"]["rows_removed"] == {"pathologist_level": {"train": 4}}
    train_ids = {r["id"] for r in rows_of(result.output, "captioning", "train")}
    assert not any(i.startswith("pathologist_level/tr_1/") for i in train_ids)


def test_dedup_against_external_benchmark_and_near_threshold(tmp_path):
    import numpy as np
    from PIL import Image as PILImage

    from pathenhanceds.sample.textures import texture

    crc = tmp_path / "crc"
    rng = np.random.default_rng(0)
    for code in ("ADI", "TUM"):
        (crc / "CRC-VAL-HE-7K" / code).mkdir(parents=True)
        for k in range(3):  # textured, so perceptual hashes differ between images
            PILImage.fromarray(texture(("ADI", "MUS", "LYM")[k] if code == "ADI" else ("TUM", "MUC", "NORM")[k],
                                       64, rng)).save(crc / "CRC-VAL-HE-7K" / code / f"{code}-CRC{k:04d}.tif")
    bench = tmp_path / "bench"
    bench.mkdir()

    # exact copy of one CRC image (as TIFF), and a slightly changed copy of another (near duplicate)
    (bench / "a.tif").write_bytes((crc / "CRC-VAL-HE-7K" / "ADI" / "ADI-CRC0000.tif").read_bytes())
    near = np.asarray(PILImage.open(crc / "CRC-VAL-HE-7K" / "TUM" / "TUM-CRC0001.tif")).copy()
    near[0, 0] = near[0, 0] + 1
    PILImage.fromarray(near).save(bench / "b.png")
    exact_only = build({"crc": crc}, tmp_path / "o1", recipe="paper", dedup_against=[bench])
    assert [r["id"] for r in exact_only.manifest["dedup"]["removed"]] == ["crc/CRC-VAL-HE-7K/ADI-CRC0000"]
    assert exact_only.manifest["dedup"]["reference_images"] == 2
    with_near = build({"crc": crc}, tmp_path / "o2", recipe="paper", dedup_against=[bench], near_dup_threshold=2)
    removed = {r["id"]: r["reason"] for r in with_near.manifest["dedup"]["removed"]}
    assert set(removed) == {"crc/CRC-VAL-HE-7K/ADI-CRC0000", "crc/CRC-VAL-HE-7K/TUM-CRC0001"}
    assert removed["crc/CRC-VAL-HE-7K/TUM-CRC0001"].startswith("near duplicate (phash distance")
    with pytest.raises(InputError, match="threshold must be an integer from 0 to 64"):
        build({"crc": crc}, tmp_path / "o3", near_dup_threshold=65)
    assert not (tmp_path / "o3").exists()


@pytest.mark.slow  # three full builds of the sample
def test_same_seed_same_digest_other_seed_differs(sample_sources, tmp_path):
    a = build(sample_sources, tmp_path / "a", seed=7)
    b = build(sample_sources, tmp_path / "b", seed=7)
    c = build(sample_sources, tmp_path / "c", seed=8)
    assert a.digest == b.digest
    assert a.digest != c.digest
    assert a.manifest["counts"] == b.manifest["counts"]


class _DarkFractionScorer:
    """A rule-based scorer implementing the `Scorer` protocol: share of dark pixels as P(H&E)."""

    model_id = "rule:dark-fraction"
    prompts = ("dark", "light")

    def score(self, images, texts=None):
        import numpy as np

        return [float((np.asarray(im.convert("L")) < 128).mean()) for im in images]


def test_paper_recipe_applies_scores_file_to_textbook(sample_sources, tmp_path):
    from pathenhanceds.filters import score_sources, write_scores
    from pathenhanceds.sources import get_source

    source = get_source("pathvqa")(sample_sources["pathvqa"])
    values = sorted(r.p_he for r in score_sources({"pathvqa": source}, he=_DarkFractionScorer(),
                                                   subsets={"textbook"}).table.rows)
    threshold = values[len(values) // 2 - 1]  # between the values, so the filter splits the images
    run = score_sources({"pathvqa": source}, he=_DarkFractionScorer(), subsets={"textbook"}, threshold=threshold)
    scores = write_scores(run.table, tmp_path / "scores.parquet")
    without = build({"pathvqa": sample_sources["pathvqa"]}, tmp_path / "a", recipe="paper")
    with_scores = build({"pathvqa": sample_sources["pathvqa"]}, tmp_path / "b", recipe="paper", scores=scores)
    kept = {r.record_id for r in run.table.rows if r.p_he > threshold}
    assert 0 < len(kept) < without.counts["vqa"]["train"]["pathvqa"]
    ids = {r["id"] for r in rows_of(with_scores.output, "vqa", "train")}
    assert ids == {f"pathvqa/{k}" for k in kept}
    assert with_scores.manifest["scores"]["model"] == "rule:dark-fraction"
    assert any("H&E filter" in n for n in with_scores.manifest["notes"])
    assert any("no --scores file" in w for w in without.manifest["warnings"])


def test_registries_list_names_and_refuse_duplicates():
    from pathenhanceds.selection import OPTIONS, SELECTIONS, list_selections, planner, register_option
    from pathenhanceds.sources import SOURCES, Source, list_sources, register_source

    assert list_selections() == ["default", "paper", "xl"]
    assert {"pcam", "crc", "pathologist_level", "pathvqa", "llava_med", "openpath"} <= set(list_sources())
    assert list_sources() == sorted(list_sources())
    assert register_source(SOURCES.get("pcam")) is SOURCES.get("pcam")  # the same class again: fine

    class Impostor(Source):
        name = "pcam"
        license = "cc0-1.0"

        def records(self, ctx):
            return iter(())

    with pytest.raises(ValueError, match="registered twice"):
        register_source(Impostor)
    with pytest.raises(ValueError, match="two planners"):
        planner("default", "pcam")(lambda p: [])
    default_pcam = SELECTIONS.get("default")["pcam"]
    assert default_pcam.__module__ == "pathenhanceds.selection.pcam"
    register_option("pcam_train_size", 10_000, OPTIONS.get("pcam_train_size").help)  # same declaration: fine
    with pytest.raises(ValueError, match="registered twice"):
        register_option("pcam_train_size", 5, "another default")
    with pytest.raises(InputError, match="must be in"):
        register_option("new_validation_fraction", 1.5, "a bad default is refused at import")
    assert "new_validation_fraction" not in OPTIONS
    with pytest.raises(InputError, match="unknown source 'pcamm' \\(did you mean 'pcam'\\?\\)"):
        build({"pcamm": "/nowhere"}, "/nowhere/out")
