"""Recipe rules on fixtures: selection, prompts, splits, leakage, determinism."""

from __future__ import annotations

import io
from collections import Counter

import pyarrow.parquet as pq
import pytest
from PIL import Image
from raw_fixtures import (
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
from pathenhanceds.recipes.prompts import (
    BLADDER_ALL_QUERIES,
    BLADDER_LESION_QUERIES,
    BLADDER_NORMAL_QUERIES,
    CRC_CLASSES,
    PCAM_CANCER_QUESTIONS,
    PCAM_NO,
    PCAM_PAPER_NEGATIVE_PROMPTS,
    PCAM_YES,
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


def test_leakage_default_fails_paper_records(tmp_path):
    # the same image in the official train and test splits
    root = write_pvqa(tmp_path / "pvqa", {"train": [("train_0001", "q", "yes")], "test": [("test_0001", "q", "no")]})
    (root / "pvqa/images/test/test_0001.jpg").write_bytes((root / "pvqa/images/train/train_0001.jpg").read_bytes())
    with pytest.raises(InputError, match="1 image\\(s\\) of validation/test also appear in train") as err:
        build({"pathvqa": root}, tmp_path / "out")
    assert "pathvqa/train/000000" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_same_seed_same_digest_other_seed_differs(sample_sources, tmp_path):
    a = build(sample_sources, tmp_path / "a", seed=7)
    b = build(sample_sources, tmp_path / "b", seed=7)
    c = build(sample_sources, tmp_path / "c", seed=8)
    assert a.digest == b.digest
    assert a.digest != c.digest
    assert a.manifest["counts"] == b.manifest["counts"]
