"""Builder robustness found with the real annotation files of the public sources (issue 12).

LLaVA-Med dialogues that lost their first QA pair, OpenPath with a scores file for other sources,
bladder counts, the `paper` recipe's test-set warnings, corrupt images naming their file in every
source, the Hub's auto-converted parquet layout, and the authors' CRC query text.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.raw_fixtures import (
    bladder_entry,
    crc_pixels,
    jpeg_bytes,
    pcam_pixels,
    png_bytes,
    write_bladder,
    write_crc,
    write_image_parquet,
    write_pcam,
    write_pvqa,
    write_textbook,
)

from pathenhanceds import build
from pathenhanceds.errors import InputError, RecordError
from pathenhanceds.filters.scores_file import ScoreMeta, ScoreRow, ScoreTable
from pathenhanceds.selection import get_planner, resolve_options
from pathenhanceds.selection.base import PlanInput
from pathenhanceds.selection.prompts import CRC_PAPER_QUERY, CRC_QUERY
from pathenhanceds.sources import BuildContext, get_source
from pathenhanceds.sources.llava_med import parse_dialogue
from pathinsight_models.cli import main

DOMAINS = ("chest_xray", "mri", "ct_scan", "histology", "gross")


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    path.write_bytes(jpeg_bytes(pixels))


def _records(name: str, path: Path, on_error: str = "fail"):
    source = get_source(name)(path)
    ctx = BuildContext(on_error=on_error)
    return source, ctx, list(source.records(ctx))


def _plan(source, records, ctx, recipe: str, scores: Any = None, **options):
    return get_planner(recipe, source.name)(PlanInput(source, records, resolve_options(options), 0, ctx,
                                                      scores=scores))


# ------------------------------------------------------------------ LLaVA-Med: first QA pair dropped upstream


def _llava_record(pair_id: str, domain: str, questions: list[str], *, token: bool = True) -> dict[str, Any]:
    turns = []
    for k, q in enumerate(questions):
        text = f"<image>\n{q}" if k == 0 and token else q
        turns += [{"from": "human", "value": text}, {"from": "gpt", "value": f"Answer to: {q}"}]
    return {"id": pair_id, "image": f"{pair_id}.jpg", "domain": {d: d == domain for d in DOMAINS},
            "conversations": turns}


def _llava_root(root: Path) -> Path:
    """Released-file shapes: LLaVA-Med's clean_conv dropped the first pair of 2_F1 and 3_F1 (their first
    answers apologised / cited the caption), so their first human turn carries no `<image>`."""
    records = [
        _llava_record("1_F1", "histology", ["What stain is used?", "What is seen?"]),
        _llava_record("2_F1", "histology", ["What type of cells are visible?", "Is there necrosis?"], token=False),
        _llava_record("3_F1", "ct_scan", ["Which organ is shown?"], token=False),
    ]
    root.mkdir(parents=True)
    (root / "llava_med_instruct_10k.json").write_text(json.dumps(records))
    for k, rec in enumerate(records):
        _jpeg(root / "images" / f"{rec['id']}.jpg", k)
    return root


def test_parse_dialogue_accepts_a_first_turn_without_image_token(tmp_path):
    rec = _llava_record("2_F1", "histology", ["What type of cells are visible?"], token=False)
    d = parse_dialogue(rec, tmp_path / "x.json", 0)
    assert d.no_image_token and d.turns[0] == ("user", "What type of cells are visible?")
    assert not parse_dialogue(_llava_record("1_F1", "histology", ["Q?"]), tmp_path / "x.json", 1).no_image_token
    two = _llava_record("4_F1", "histology", ["Q?"])
    two["conversations"][0]["value"] = "<image>\n<image>\nQ?"
    with pytest.raises(RecordError, match="2 '<image>' tokens, expected at most one"):
        parse_dialogue(two, tmp_path / "x.json", 2)


def test_llava_med_build_keeps_dialogues_that_lost_their_first_pair(tmp_path):
    root = _llava_root(tmp_path / "llava")
    result = build({"llava_med": root}, tmp_path / "out", recipe="paper")  # exit 2 before the fix
    stats = result.manifest["inputs"]["llava_med"]["stats"]
    assert stats["no_image_token"] == 2 and stats["no_image_token_histology"] == 1
    assert result.manifest["selection_counts"]["llava_med"] == {"no_image_token": 1}  # after the domain filter
    assert result.counts == {"conversation": {"train": {"llava_med": 2}}}
    table = pq.read_table(next((tmp_path / "out" / "data" / "conversation").glob("train-*.parquet")))
    rows = {r["id"]: r for r in table.to_pylist()}
    first = rows["llava_med/10k/2_F1"]["messages"][0]
    assert first["role"] == "user"
    assert [p["type"] for p in first["content"]] == ["image", "text"]  # image at the start of the first user turn
    assert first["content"][1]["text"] == "What type of cells are visible?"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| llava_med | kept dialogues whose first QA pair LLaVA-Med's clean_conv had dropped" in card
    assert any("1 kept dialogue(s) had no <image> token" in n for n in result.manifest["notes"])


# ------------------------------------------------------------------------------- OpenPath + --scores


def _openpath(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        _jpeg(root / "images" / f"{100 + i}.jpg", 100 + i)
        lines.append(json.dumps({"tweet_id": str(100 + i), "text": f"Granulomas with giant cells, case {i}.",
                                 "image": f"images/{100 + i}.jpg"}))
    (root / "hydrated.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _scores(rows: list[ScoreRow]) -> ScoreTable:
    return ScoreTable(rows, ScoreMeta("biomedclip", ("an H&E image", "another image")), Path("scores.parquet"))


def test_openpath_scores_file_without_openpath_rows_is_an_input_error(tmp_path):
    source, ctx, records = _records("openpath", _openpath(tmp_path / "op", 3))
    other = _scores([ScoreRow("a" * 64, "pathvqa", "textbook/000000", "textbook", 0.99, None)])
    with pytest.raises(InputError, match="no score for any of the 3 OpenPath tweets \\(it scores: pathvqa\\)") as err:
        _plan(source, records, ctx, "paper", scores=other)
    assert "pathinsight data score --source openpath=" in err.value.fix
    assert err.value.file == "scores.parquet"
    # --openpath-top-k 0 needs no scores: the fix offered works
    assert len(_plan(source, records, ctx, "paper", scores=other, openpath_top_k=0)) == 3


def test_openpath_scores_file_covering_some_tweets_warns(tmp_path):
    source, ctx, records = _records("openpath", _openpath(tmp_path / "op", 3))
    partial = _scores([ScoreRow(f"{i}" * 64, "openpath", r.record_id, r.subset, 0.99, 0.5 + i / 10)
                       for i, r in enumerate(records[:2])])
    rows = _plan(source, records, ctx, "paper", scores=partial)
    assert [r.id for r in rows] == ["openpath/100", "openpath/101"]
    assert any("no score for 1 of 3 tweets" in w for w in ctx.warnings)


# ------------------------------------------------------------------------------------ bladder counts


def _bladder(root: Path) -> Path:
    return write_bladder(root, {
        "train": {"a_001": bladder_entry(0), "b_002": bladder_entry(1), "c_003": bladder_entry(3)},
        "test": {"d_004": bladder_entry(2), "e_005": bladder_entry(3)},
    })


@pytest.mark.parametrize("recipe", ["default", "paper"])
def test_bladder_counts_what_the_selection_leaves_out(tmp_path, recipe):
    result = build({"pathologist_level": _bladder(tmp_path / "bladder")}, tmp_path / "out", recipe=recipe)
    rows = sum(n for by_src in result.counts["captioning"].values() for n in by_src.values())
    assert rows == 1 + 4 + 4  # normal: caption 0; graded: captions 1-4; label 3: none
    # 25 captions: 10 of the two label-3 images, 4 of the normal image, caption 0 of each graded image
    assert result.manifest["selection_counts"]["pathologist_level"] == {"label_3_images": 2, "unused_captions": 16}
    card = (tmp_path / "out" / "README.md").read_text()
    counts_section = card.split("## Counts", 1)[1].split("## Build", 1)[0]
    assert "| pathologist_level | images with label 3 (insufficient information), left out | 2 |" in counts_section
    assert "| pathologist_level | captions not used (" in counts_section and "of 25 | 16 |" in counts_section


# ---------------------------------------------------------------------------- paper recipe warnings


def test_paper_recipe_warns_about_standard_test_sets(tmp_path, capsys):
    crc = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 2, "TUM": 2})
    pcam = write_pcam(tmp_path / "pcam", {"train": [0, 1, 1, 0]})
    bladder = _bladder(tmp_path / "bladder")
    code = main(["data", "build", "--source", f"crc={crc}", "--source", f"pcam={pcam}",
                 "--source", f"pathologist_level={bladder}", "--recipe", "paper", "--output", str(tmp_path / "out")])
    assert code == 0
    err = capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    card = (tmp_path / "out" / "README.md").read_text()
    expected = ["the 4 CRC-VAL-HE-7K images, the standard CRC test set, are training rows",
                "the 2 image(s) of the bladder test annotations (test_annotation.json",
                "the first 4 PCam train-file patches are training rows"]
    for text in expected:
        assert f"warning: paper recipe: {text}" in err
        assert sum(text in w for w in manifest["warnings"]) == 1
        assert text in card.split("## Warnings", 1)[1]
    # the default recipe keeps test sets as test sets: no such warning
    result = build({"pathologist_level": bladder}, tmp_path / "default")
    assert not any(w.startswith("paper recipe") for w in result.manifest["warnings"])


def test_paper_crc_query_is_the_authors_text(tmp_path):
    # minaa-lab/pathMLLMdata classification/make_classification_chatml_CRC_VAL_HE_7K.py, before "<img>"
    authors = ("Which category does this pathological images belong to? Choose one of the following categories: "
               "'Adipose', 'Background', 'Debris', 'Lymphocytes', 'Mucus', 'Smooth Muscle', 'Normal Colon Mucosa', "
               "'Cancer-Associated Stroma', 'Colorectal Adenocarcinoma Epithelium'")
    assert CRC_PAPER_QUERY == authors
    source, ctx, records = _records("crc", write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"MUS": 1, "NORM": 1}))
    paper = _plan(source, records, ctx, "paper")
    assert [r.turns for r in paper] == [(("user", authors), ("assistant", "Smooth Muscle")),
                                        (("user", authors), ("assistant", "Normal Colon Mucosa"))]
    default = _plan(source, records, BuildContext(), "default")
    assert {r.turns[0][1] for r in default} == {CRC_QUERY}  # our grammatical wording stays the default


# ------------------------------------------------------------- corrupt images name file, record and fix


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_crc(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    write_crc(root, "CRC-VAL-HE-7K", {"ADI": 2, "TUM": 3})
    bad = _truncate(root / "CRC-VAL-HE-7K" / "TUM" / "TUM-CRC0001.tif")
    return {"crc": root}, bad, "crc/CRC-VAL-HE-7K/TUM-CRC0001", "default"


def _corrupt_crc_parquet(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    images = [png_bytes(crc_pixels(i % 9, i)) for i in range(6)]
    images[4] = images[4][:20]
    bad = write_image_parquet(root / "data" / "CRC_VAL_HE_7K-00000-of-00001.parquet", images, label=[0, 1, 2, 3, 4, 5])
    return {"crc": root}, bad, "crc/CRC-VAL-HE-7K/000004", "default"


def _corrupt_pcam_parquet(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    ys = [True, False, True, False]
    images = [png_bytes(pcam_pixels(i, int(y))) for i, y in enumerate(ys)]
    images[1] = b"\x89PNG\r\n\x1a\n" + b"\x00" * 30
    bad = write_image_parquet(root / "data" / "train-00000-of-00001.parquet", images, label=ys)
    return {"pcam": root}, bad, "pcam/train_000001", "default"


def _corrupt_pcam_h5(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    root.mkdir(parents=True)
    x = np.stack([pcam_pixels(i, i % 2) for i in range(4)])
    bad = root / "camelyonpatch_level_2_split_train_x.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("x", data=x, chunks=(1, 8, 8, 3), compression="gzip")
        info = f["x"].id.get_chunk_info(2)  # the chunk of patch 2
    with h5py.File(root / "camelyonpatch_level_2_split_train_y.h5", "w") as f:
        f.create_dataset("y", data=np.array([i % 2 for i in range(4)], np.uint8).reshape(-1, 1, 1, 1))
    with open(bad, "r+b") as handle:  # garbage in place of the compressed chunk
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * info.size)
    return {"pcam": root}, bad, "pcam/train_000002", "default"


def _corrupt_pvqa(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    write_pvqa(root, {"train": [("train_0000", "What is shown?", "fibrosis"), ("train_0001", "Is it benign?", "yes")],
                      "test": [("test_0000", "Is it malignant?", "no")]})
    bad = _truncate(root / "pvqa" / "images" / "train" / "train_0001.jpg")
    return {"pathvqa": root}, bad, "pathvqa/train/000001", "default"


def _corrupt_pathvqa_parquet(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    images = [jpeg_bytes(np.full((8, 8, 3), i * 40, np.uint8)) for i in range(3)]
    images[2] = images[2][:40]
    bad = write_image_parquet(root / "data" / "train-00000-of-00001.parquet", images,
                              question=["q0", "q1", "q2"], answer=["yes", "no", "cells"])
    return {"pathvqa": root}, bad, "pathvqa/train/000002", "default"


def _corrupt_textbook(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    write_textbook(root, [("Fig.1", "What is seen?", "cells"), ("Fig.2", "Is it benign?", "yes")])
    folder = root / "data" / "textbook_of_pathology_image"  # the unzipped folder is read before the zip
    folder.mkdir()
    for k, name in enumerate(("Fig.1", "Fig.2")):
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(np.full((8, 8, 3), 50 + k, np.uint8)))
    bad = _truncate(folder / "Fig.2.jpg")
    return {"pathvqa": root}, bad, "pathvqa/textbook/000001", "paper"


def _corrupt_bladder(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    write_bladder(root, {"train": {"a_001": bladder_entry(0), "b_002": bladder_entry(0)},
                         "test": {"c_003": bladder_entry(0)}})
    bad = _truncate(root / "Report" / "Images" / "c_003.png")
    return {"pathologist_level": root}, bad, "pathologist_level/c_003", "default"  # the image's record


def _corrupt_llava(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    _llava_root(root)
    bad = _truncate(root / "images" / "1_F1.jpg")
    return {"llava_med": root}, bad, "llava_med/10k/1_F1", "default"


def _corrupt_openpath(root: Path) -> tuple[dict[str, Path], Path, str, str]:
    _openpath(root, 3)
    bad = _truncate(root / "images" / "101.jpg")
    return {"openpath": root}, bad, "openpath/101", "default"


CORRUPT = {"crc": _corrupt_crc, "crc_parquet": _corrupt_crc_parquet, "pcam_parquet": _corrupt_pcam_parquet,
           "pcam_h5": _corrupt_pcam_h5, "pathvqa": _corrupt_pvqa, "pathvqa_parquet": _corrupt_pathvqa_parquet,
           "pathvqa_textbook": _corrupt_textbook, "pathologist_level": _corrupt_bladder,
           "llava_med": _corrupt_llava, "openpath": _corrupt_openpath}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_image_error_names_file_record_and_fix(tmp_path, case):
    sources, bad, row_id, recipe = CORRUPT[case](tmp_path / "raw")
    with pytest.raises(RecordError) as err:
        build(sources, tmp_path / "out", recipe=recipe)
    assert err.value.file is not None and Path(err.value.file).resolve() == bad.resolve()
    assert err.value.record == row_id
    assert err.value.fix and "--on-error skip" in err.value.fix
    message = str(err.value)
    assert f"file: {err.value.file}" in message and f"record: {row_id}" in message and "fix: " in message
    assert not (tmp_path / "out").exists()
    # skipped instead: the manifest names the file relative to its source folder, and the row
    result = build(sources, tmp_path / "out", recipe=recipe, on_error="skip")
    (root,) = sources.values()
    assert [(s["file"], s["record"]) for s in result.manifest["skipped"]] == [
        (bad.resolve().relative_to(root.resolve()).as_posix(), row_id)]


# ---------------------------------------------------------------- the Hub's auto-converted parquet layout


def _same_records(a: list, b: list) -> None:
    """Same ids, subsets and fields (subsets may come in another order: files are read in path order)."""
    assert sorted((r.record_id, r.subset, r.fields["class_code" if "class_code" in r.fields else "label"])
                  for r in a) == sorted((r.record_id, r.subset, r.fields.get("class_code", r.fields.get("label")))
                                        for r in b)


def _loaded(source, records) -> list[bytes]:
    return [source.load_image(r).data for r in records]


def test_pathvqa_hub_auto_converted_layout(tmp_path):
    splits = {"train": 3, "validation": 2, "test": 1}
    for layout in ("mirror", "hub"):
        for k, (split, n) in enumerate(splits.items()):
            images = [jpeg_bytes(np.full((8, 8, 3), 10 * k + i, np.uint8)) for i in range(n)]
            path = (tmp_path / layout / "data" / f"{split}-00000-of-00001.parquet" if layout == "mirror"
                    else tmp_path / layout / "default" / split / "0000.parquet")
            write_image_parquet(path, images, question=[f"{split} q{i}" for i in range(n)],
                                answer=["yes" if i % 2 else "fibrosis" for i in range(n)])
    src_m, _, mirror = _records("pathvqa", tmp_path / "mirror")
    src_h, _, hub = _records("pathvqa", tmp_path / "hub")
    assert [(r.record_id, r.subset) for r in hub] == [(r.record_id, r.subset) for r in mirror]
    assert [(r.fields["question"], r.fields["answer"]) for r in hub] == [
        (r.fields["question"], r.fields["answer"]) for r in mirror]
    assert {r.subset for r in hub} == {"train", "val", "test"}
    assert len({r.fields["image_id"] for r in hub}) == len(hub)  # every file is 0000.parquet: ids stay unique
    assert _loaded(src_h, hub) == _loaded(src_m, mirror)
    # default recipe builds from it
    result = build({"pathvqa": tmp_path / "hub"}, tmp_path / "out")
    assert result.counts["vqa"] == {"train": {"pathvqa": 3}, "validation": {"pathvqa": 2}, "test": {"pathvqa": 1}}


def test_pcam_hub_auto_converted_layout_with_several_files_per_split(tmp_path):
    ys = {"train": [True, False, True, True, False], "valid": [False, True], "test": [True]}
    for split, labels in ys.items():
        images = [png_bytes(pcam_pixels(i, int(y), split=split)) for i, y in enumerate(labels)]
        write_image_parquet(tmp_path / "mirror" / "data" / f"{split}-00000-of-00001.parquet", images, label=labels)
        # the Hub cuts large splits into 0000.parquet, 0001.parquet, ...
        write_image_parquet(tmp_path / "hub" / "default" / split / "0000.parquet", images[:3], label=labels[:3])
        if len(labels) > 3:
            write_image_parquet(tmp_path / "hub" / "default" / split / "0001.parquet", images[3:], label=labels[3:])
    src_m, _, mirror = _records("pcam", tmp_path / "mirror")
    src_h, _, hub = _records("pcam", tmp_path / "hub")
    _same_records(hub, mirror)
    assert [r.record_id for r in hub][:5] == [f"train_{i:06d}" for i in range(5)]
    assert _loaded(src_h, hub) == _loaded(src_m, mirror)


def test_crc_hub_auto_converted_layout_including_partial_splits(tmp_path):
    subsets = {"CRC_VAL_HE_7K": [0, 8, 3], "NCT_CRC_HE_100K": [1, 2, 2, 5], "NCT_CRC_HE_100K_NONORM": [4]}
    for k, (split, labels) in enumerate(subsets.items()):
        images = [png_bytes(crc_pixels(label, i, split)) for i, label in enumerate(labels)]
        write_image_parquet(tmp_path / "mirror" / "data" / f"{split}-00000-of-00001.parquet", images, label=labels)
        folder = f"partial-{split}" if k == 1 else split  # the Hub converts only part of very large splits
        write_image_parquet(tmp_path / "hub" / "default" / folder / "0000.parquet", images, label=labels)
    src_m, _, mirror = _records("crc", tmp_path / "mirror")
    src_h, _, hub = _records("crc", tmp_path / "hub")
    _same_records(hub, mirror)
    assert {r.subset for r in hub} == {"CRC-VAL-HE-7K", "NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM"}
    assert [r.fields["class_code"] for r in hub if r.subset == "CRC-VAL-HE-7K"] == ["ADI", "TUM", "LYM"]
    by_id = {r.record_id: r for r in mirror}
    assert _loaded(src_h, hub) == _loaded(src_m, [by_id[r.record_id] for r in hub])


@pytest.mark.parametrize("name, split, columns", [
    ("pathvqa", "train", {"question": ["q"], "answer": ["yes"]}),
    ("pcam", "train", {"label": [True]}),
    ("crc", "CRC_VAL_HE_7K", {"label": [0]}),
])
def test_both_parquet_layouts_at_once_are_refused(tmp_path, name, split, columns):
    image = [png_bytes(np.zeros((4, 4, 3), np.uint8))]
    write_image_parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet", image, **columns)
    write_image_parquet(tmp_path / "default" / split / "0000.parquet", image, **columns)
    with pytest.raises(InputError, match="two copies of the parquet mirror") as err:
        _records(name, tmp_path)
    assert err.value.fix == "keep one copy (remove the other folder)"


def test_unknown_parquet_folder_still_names_both_layouts(tmp_path):
    write_image_parquet(tmp_path / "default" / "holdout" / "0000.parquet", [png_bytes(np.zeros((4, 4, 3), np.uint8))],
                        label=[True])
    with pytest.raises(InputError, match="cannot tell the split") as err:
        _records("pcam", tmp_path)
    assert "default/{train,valid,test}/NNNN.parquet" in err.value.fix


def test_pcam_pixels_of_the_hub_layout_are_the_patches(tmp_path):
    labels = [True, False]
    images = [png_bytes(pcam_pixels(i, int(y))) for i, y in enumerate(labels)]
    write_image_parquet(tmp_path / "default" / "train" / "0000.parquet", images, label=labels)
    src, _, recs = _records("pcam", tmp_path)
    decoded = [np.asarray(Image.open(io.BytesIO(src.load_image(r).data)))[0, 0].tolist() for r in recs]
    assert decoded == [pcam_pixels(0, 1)[0, 0].tolist(), pcam_pixels(1, 0)[0, 0].tolist()]
