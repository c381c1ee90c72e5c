"""PathGen-Instruct, Quilt-Instruct, PathInstruct and PMC-VQA: native layouts, rows, licences, splits, `xl`."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.raw_fixtures import write_crc

from pathenhanceds import build
from pathenhanceds.errors import InputError, RecordError
from pathenhanceds.selection import SELECTIONS, get_planner, list_selections, resolve_options
from pathenhanceds.selection.base import PlanInput
from pathenhanceds.selection.instruction_sets import PMC_VQA_SUFFIX
from pathenhanceds.selection.pathgen import patient_split
from pathenhanceds.sources import get_source
from pathenhanceds.sources.base import BuildContext
from pathenhanceds.sources.pathgen_instruct import wsi_id_of
from pathenhanceds.sources.pmc_vqa import is_pathology, pathology_match
from pathenhanceds.sources.quilt_instruct import video_of
from pathenhanceds.write.licenses import dataset_license, is_no_derivatives, is_non_commercial

NEW = ("pathgen_instruct", "quilt_instruct", "pathinstruct", "pmc_vqa")


# ---- native-format fixtures (tiny; pixels encode the record so every image is unique) ----

def _png(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = k % 256, k // 256, 77
    Image.fromarray(pixels, "RGB").save(path)


def _turns(q: str, a: str, *, after: bool = False, spelling: str = "from", extra: int = 0) -> list[dict[str, str]]:
    first = f"{q}\n<image>" if after else f"<image>\n{q}"
    pairs = [(first, a)] + [(f"Follow-up {j}?", f"Answer {j}.") for j in range(extra)]
    if spelling == "role":
        return [t for u, g in pairs for t in ({"role": "User", "content": u}, {"role": "GPT", "content": g})]
    return [t for u, g in pairs for t in ({"from": "human", "value": u}, {"from": "gpt", "value": g})]


def tcga(patient: int, slide: int = 1) -> str:
    return f"TCGA-AA-{patient:04d}-01Z-00-DX{slide}.{patient:08X}-AAAA-4AAA-8AAA-{slide:012X}"


def write_pathgen_instruct(root: Path, patients: int = 12) -> Path:
    records = []
    for p in range(patients):
        for s in (1, 2):  # two slides per patient, two patches per slide
            for x in (0, 672):
                name = f"{tcga(p, s)}_{x}_{1344 * s}.png"
                _png(root / "images" / name, 1000 + 100 * p + 10 * s + x // 672)
                records.append({"id": f"pgi_{len(records)}", "image": name,
                                "conversations": _turns("Describe the patch.", f"Patient {p} tissue.",
                                                        after=len(records) % 2 == 1)})
    records.append({"id": "pgi_missing", "image": f"{tcga(99)}_0_0.png",  # patch not cut: a counted skip
                    "conversations": _turns("Describe.", "Missing.")})
    (root / "PathGen-Instruct.json").write_text(json.dumps(records))
    (root / "PathGen-1.6M_sample.json").write_text(json.dumps([{"wsi_id": tcga(0), "position": ["0", "0"],
                                                                 "caption": "a PathGen caption, not a dialogue"}]))
    return root


def write_quilt(root: Path, videos: int = 10, per_video: int = 3, *, name: str = "quilt_instruct_107k.json") -> Path:
    records = []
    for v in range(videos):
        for n in range(per_video):
            row_id = f"Vid_{v:02d}-abc_{n}"  # YouTube ids may hold '_' and '-'
            _png(root / "quilt_1m" / f"{row_id}.png", 2000 + 10 * v + n)
            records.append({"id": row_id, "image": f"{row_id}.png",
                            "conversations": _turns(f"What is in frame {n}?", f"Video {v} frame {n}.",
                                                    after=n == 1, spelling="role" if n == 2 else "from",
                                                    extra=n)})
    records.append({"id": "Vid_00-abc_0", "image": "Vid_00-abc_0.png",  # same id, other dialogue type
                    "conversations": _turns("Describe it in detail.", "A detailed description.")})
    records.append(json.loads(json.dumps(records[0])))  # an exact repeat: dropped
    records.append({"id": "bad_1", "image": "Vid_00-abc_1.png",
                    "conversations": [{"from": "human", "value": "no image token"}, {"from": "gpt", "value": "x"}]})
    (root / name).write_text(json.dumps(records))
    return root


def write_pathinstruct(root: Path, articles: int = 10) -> Path:
    records = []
    for a in range(articles):
        for f in (1, 2):
            name = f"PMC{500000 + a}_F{f}.jpg"
            path = root / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), (a * 20 % 256, f * 60, 9), np.uint8)).save(path, format="JPEG")
            records.append({"id": f"{a}-{f}", "image": name,
                            "conversations": _turns("What stain is used?", f"H&E, article {a} figure {f}.")})
    (root / "PathInstruct.json").write_text(json.dumps(records))
    return root


PMC_ROWS = [  # question, choices, label, pathology?
    ("What does the H&E stained section show?", ("Necrosis", "Fibrosis", "Normal", "Granuloma"), "B", True),
    ("What is seen on the axial CT scan?", ("A mass", "Effusion", "Nothing", "Fracture"), "A", False),
    ("Which cells are highlighted by immunohistochemistry?", ("T cells", "B cells", "Macrophages", "NK"), "C", True),
    ("What does this micrograph show on the MRI-guided biopsy?", ("A", "B", "C", "D"), "D", False),
    ("What is the most likely diagnosis?", ("Melanoma", "Naevus", "Lentigo", "Keratosis"), "A", False),
]


def write_pmc_vqa(root: Path, n_train: int = 30, n_test: int = 10, *, version: str = "1") -> Path:
    suffix = "" if version == "1" else "_2"
    for subset, n, answer_col, offset in (("train", n_train, "Answer", 0), ("test", n_test, "Anwser", 1000)):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["Figure_path", "Question", answer_col, "Choice A", "Choice B", "Choice C", "Choice D",
                         "Answer_label", "Caption"])
        for i in range(n):
            q, choices, label, _ = PMC_ROWS[i % len(PMC_ROWS)]
            figure = f"PMC{900000 + (offset + i) // 2}_F{i % 2}.jpg"  # two questions per article
            _png(root / ("images" if version == "1" else "images_2") / figure, 5000 + offset + i)
            writer.writerow([figure, q, choices["ABCD".index(label)],
                             *(f" {lt}:{c}" for lt, c in zip("ABCD", choices, strict=True)), label, ""])
        (root / f"{subset}{suffix}.csv").write_text(buffer.getvalue())
    return root


def rows_of(out: Path, config: str, split: str) -> list[dict]:
    return [r for f in sorted((out / "data" / config).glob(f"{split}-*.parquet")) for r in pq.read_table(f).to_pylist()]


def all_rows(out: Path, config: str) -> dict[str, list[dict]]:
    return {s: rows_of(out, config, s) for s in ("train", "validation", "test")}


def plan(name: str, path: Path, recipe: str = "xl", seed: int = 0, ctx: BuildContext | None = None, **options):
    ctx = ctx or BuildContext(on_error="skip")
    src = get_source(name)(path)
    records = list(src.records(ctx))
    return get_planner(recipe, name)(PlanInput(src, records, resolve_options(options), seed, ctx)), ctx


# ---- tests ----

def test_xl_selection_is_default_plus_the_new_sources():
    assert "xl" in list_selections()
    default, xl = SELECTIONS.get("default"), SELECTIONS.get("xl")
    assert set(default) <= set(xl) and all(xl[s] is default[s] for s in default)
    assert {"pathgen", *NEW} <= set(xl)
    for other in ("default", "paper"):  # the instruction sets come with `xl` only
        assert not set(NEW) & set(SELECTIONS.get(other))
        with pytest.raises(InputError, match="does not use source 'quilt_instruct'"):
            get_planner(other, "quilt_instruct")


def test_dialogue_sources_build_conversations_with_the_image_first_and_licence_per_row(tmp_path):
    import datasets

    sources = {"pathgen_instruct": write_pathgen_instruct(tmp_path / "pgi"),
               "quilt_instruct": write_quilt(tmp_path / "quilt"),
               "pathinstruct": write_pathinstruct(tmp_path / "pi")}
    result = build(sources, tmp_path / "out", recipe="xl", on_error="skip")
    out = result.output
    rows = [r for split in all_rows(out, "conversation").values() for r in split]
    by_source = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    assert {k: len(v) for k, v in by_source.items()} == {"pathgen_instruct": 48, "quilt_instruct": 31,
                                                         "pathinstruct": 20}
    licences = {"pathgen_instruct": "CC-BY-NC-4.0", "quilt_instruct": "CC-BY-NC-ND-3.0",
                "pathinstruct": "CC-BY-NC-2.0"}
    for r in rows:
        assert r["task"] == "conversation" and r["license"] == licences[r["source"]]
        assert len(r["images"]) == 1
        first = r["messages"][0]
        assert first["role"] == "user" and first["content"][0]["type"] == "image"
        assert all(p["type"] == "text" for m in r["messages"][1:] for p in m["content"])
        text = " ".join(p["text"] for m in r["messages"] for p in m["content"] if p["type"] == "text")
        assert "<image>" not in text
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * (len(r["messages"]) // 2)
    # `<image>` after the question and the role/content spelling both read; extra turns kept in order
    q = {r["id"]: r for r in by_source["quilt_instruct"]}
    two = q["quilt_instruct/quilt_instruct_107k/Vid_03-abc_2"]["messages"]
    assert [m["content"][-1]["text"] for m in two] == ["What is in frame 2?", "Video 3 frame 2.", "Follow-up 0?",
                                                       "Answer 0.", "Follow-up 1?", "Answer 1."]
    assert q["quilt_instruct/quilt_instruct_107k/Vid_03-abc_1"]["messages"][0]["content"][1]["text"] \
        == "What is in frame 1?"
    assert "quilt_instruct/quilt_instruct_107k/Vid_00-abc_0-2" in q  # same id, another dialogue type
    # the bad record is skipped and listed; the repeat and the missing patch are counted in notes
    assert [s["record"] for s in result.manifest["skipped"]] == ["quilt_instruct_107k.json[32] (id bad_1)"]
    notes = " ".join(result.manifest["notes"])
    assert "quilt_instruct: 1 exact duplicate" in notes and "pathgen_instruct: 1 dialogue(s) skipped" in notes
    # the PathGen caption file in the same folder is not read as dialogues
    assert result.manifest["inputs"]["pathgen_instruct"]["stats"]["dialogues_read"] == 49
    # licences: NC and ND propagate to the dataset licence and the card
    assert result.manifest["license"] == "cc-by-nc-nd-3.0"
    card = (out / "README.md").read_text()
    assert "**non-commercial**" in card and "**no-derivatives**" in card and "CC-BY-NC-ND-3.0" in card
    ds = datasets.load_dataset(str(out), "conversation")
    assert sum(ds.num_rows.values()) == 99
    assert ds["train"][0]["images"][0].size == (8, 8)


def _splits_by_group(rows) -> dict[str, set[str]]:
    """group (patient, video, article) -> the splits its rows went to, in first-seen order."""
    splits = defaultdict(set)
    for row in rows:
        splits[row.record.fields["group"]].add(row.split)
    return splits


def test_splits_keep_patients_videos_and_articles_together(tmp_path):
    pgi, _ = plan("pathgen_instruct", write_pathgen_instruct(tmp_path / "pgi", patients=40), seed=3,
                  pathgen_validation_fraction=0.2, pathgen_test_fraction=0.2)
    by_patient = _splits_by_group(pgi)
    for row in pgi:
        # the pathgen source's own patient split: a patient is in the same split in both sources
        assert row.split == patient_split(row.record.fields["group"], 3, 0.2, 0.2)
    assert all(len(s) == 1 for s in by_patient.values())
    assert {s for ss in by_patient.values() for s in ss} == {"train", "validation", "test"}
    assert next(iter(by_patient)) == "TCGA-AA-0000"

    quilt, _ = plan("quilt_instruct", write_quilt(tmp_path / "q", videos=30), seed=1,
                    quilt_instruct_validation_fraction=0.3, quilt_instruct_test_fraction=0.3)
    by_video = _splits_by_group(quilt)
    assert len(by_video) == 30 and all(len(s) == 1 for s in by_video.values())
    assert {s for ss in by_video.values() for s in ss} == {"train", "validation", "test"}

    pi, _ = plan("pathinstruct", write_pathinstruct(tmp_path / "pi", articles=30), seed=1,
                 pathinstruct_validation_fraction=0.3, pathinstruct_test_fraction=0.3)
    by_article = _splits_by_group(pi)
    assert len(by_article) == 30 and all(len(s) == 1 for s in by_article.values())


def test_sizes_are_seeded_and_order_independent(tmp_path):
    root = write_quilt(tmp_path / "q", videos=12)
    first, ctx = plan("quilt_instruct", root, seed=5, quilt_instruct_max_records=7)
    assert len(first) == 7 and any("kept 7 of 37" in n for n in ctx.notes)
    data = json.loads((root / "quilt_instruct_107k.json").read_text())
    regular = data[:-3]
    random.Random(1).shuffle(regular)
    (root / "quilt_instruct_107k.json").write_text(json.dumps(regular + data[-3:]))
    again, _ = plan("quilt_instruct", root, seed=5, quilt_instruct_max_records=7)
    assert {r.id for r in again} == {r.id for r in first}
    other_seed, _ = plan("quilt_instruct", root, seed=6, quilt_instruct_max_records=7)
    assert {r.id for r in other_seed} != {r.id for r in first}


def test_quilt_reads_the_full_file_or_else_its_parts(tmp_path):
    root = write_quilt(tmp_path / "q", videos=2)
    write_quilt(root, videos=1, name="quilt_instruct_conv_desc.json")
    assert [p.name for p in get_source("quilt_instruct")(root).instruct] == ["quilt_instruct_107k.json"]
    (root / "quilt_instruct_107k.json").unlink()
    write_quilt(root, videos=1, name="quilt_instruct_complex_abductive.json")
    assert [p.name for p in get_source("quilt_instruct")(root).instruct] == [
        "quilt_instruct_conv_desc.json", "quilt_instruct_complex_abductive.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no Quilt-Instruct file"):
        get_source("quilt_instruct")(empty)
    assert video_of("x7Ubz-ZcZr0_12") == "x7Ubz-ZcZr0" and video_of("a_b_c_3") == "a_b_c"
    assert wsi_id_of(f"{tcga(4)}_41024_35104.png") == tcga(4) and wsi_id_of("plain.png") == "plain"


def test_pmc_vqa_pathology_rule_official_splits_and_prompt(tmp_path):
    root = write_pmc_vqa(tmp_path / "pmc")
    rows, ctx = plan("pmc_vqa", root, seed=0, pmc_vqa_validation_fraction=0.3)
    # the rule keeps questions 0 and 2 of every 5 (H&E, immunohistochemistry): not CT, not "MRI ... biopsy"
    assert {r.record.fields["question"] for r in rows} == {PMC_ROWS[0][0], PMC_ROWS[2][0]}
    assert any("pathology rule kept 16 of 40 questions (12 train, 4 test)" in n for n in ctx.notes)
    assert {r.split for r in rows if r.record.subset == "test"} == {"test"}
    assert {r.split for r in rows if r.record.subset == "train"} == {"train", "validation"}
    by_article = _splits_by_group(rows)
    assert all(len(s) == 1 for s in by_article.values())
    row = next(r for r in rows if r.record.fields["question"] == PMC_ROWS[0][0])
    assert row.task == "vqa" and row.answer_type == "closed"
    assert row.turns == (("user", f"{PMC_ROWS[0][0]}\nOptions:\nA: Necrosis\nB: Fibrosis\nC: Normal\n"
                                  f"D: Granuloma\n{PMC_VQA_SUFFIX}"), ("assistant", "B: Fibrosis"))
    everything, _ = plan("pmc_vqa", root, pmc_vqa_subset="all")
    assert len(everything) == 40
    assert pathology_match("H&E stain, original magnification x400") == (3, 0)
    assert not is_pathology({"question": "Biopsy site on the CT?", "choices": ("a",) * 4, "caption": None})
    with pytest.raises(InputError, match="version 2 metafiles"):
        plan("pmc_vqa", root, pmc_vqa_version="2")
    v2, _ = plan("pmc_vqa", write_pmc_vqa(tmp_path / "pmc2", 10, 5, version="2"), pmc_vqa_version="2")
    assert {r.record.subset for r in v2} == {"train_2", "test_2"}


def test_pmc_vqa_bad_rows_are_record_errors(tmp_path):
    root = write_pmc_vqa(tmp_path / "pmc", 5, 0)
    text = (root / "train.csv").read_text().splitlines()
    text[1] = text[1].replace(",B,", ",E,")  # label E, and the answer "Fibrosis" still matches choice B
    text[3] = text[3].rsplit(",", 2)[0] + ",Z,"  # label Z, and the answer "Macrophages" matches choice C
    (root / "train.csv").write_text("\n".join(text) + "\n")
    (root / "test.csv").unlink()
    rows, _ = plan("pmc_vqa", root, pmc_vqa_subset="all")
    answers = {r.record.fields["question"]: r.turns[1][1] for r in rows}
    assert answers[PMC_ROWS[0][0]] == "B: Fibrosis" and answers[PMC_ROWS[2][0]] == "C: Macrophages"
    bad = root / "bad"
    write_pmc_vqa(bad, 1, 0)
    lines = (bad / "train.csv").read_text().splitlines()
    lines[1] = lines[1].replace("Fibrosis,", "Unknown,", 1).replace(",B,", ",Q,")
    (bad / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match="matches 0 choices"):
        list(get_source("pmc_vqa")(bad).records(BuildContext()))
    (bad / "train.csv").write_text("Figure_path,Question\nx.jpg,q\n")
    with pytest.raises(InputError, match="lacks the PMC-VQA columns"):
        list(get_source("pmc_vqa")(bad).records(BuildContext()))


def test_planted_held_out_image_from_another_source_is_dropped_in_xl(tmp_path):
    """A CRC-VAL-HE-7K image (test in PathEnhanceDS) reused as a Quilt-Instruct frame and a PMC-VQA figure."""
    from pathenhanceds.images import payload_from_file

    crc = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 2})
    write_crc(crc, "NCT-CRC-HE-100K", {"ADI": 20})
    quilt = write_quilt(tmp_path / "quilt", videos=4)
    pmc = write_pmc_vqa(tmp_path / "pmc", 10, 0)
    held_out = payload_from_file(crc / "CRC-VAL-HE-7K" / "ADI" / "ADI-CRC0001.tif").data
    (quilt / "quilt_1m" / "Vid_02-abc_1.png").write_bytes(held_out)
    (pmc / "images" / "PMC900001_F0.jpg").write_bytes(held_out)  # question 2: pathology, train
    result = build({"crc": crc, "quilt_instruct": quilt, "pmc_vqa": pmc}, tmp_path / "out", recipe="xl",
                   options={"quilt_instruct_validation_fraction": 0.0, "quilt_instruct_test_fraction": 0.0,
                            "pmc_vqa_validation_fraction": 0.0}, on_error="skip")
    removed = {r["id"]: r["reason"] for r in result.manifest["dedup"]["removed"]}
    assert set(removed) == {"quilt_instruct/quilt_instruct_107k/Vid_02-abc_1", "pmc_vqa/train/000003"}
    assert all("test image crc/CRC-VAL-HE-7K/ADI-CRC0001 (crc)" in why for why in removed.values())
    assert result.manifest["dedup"]["rows_removed"] == {"quilt_instruct": {"train": 1}, "pmc_vqa": {"train": 1}}
    train_ids = {r["id"] for r in rows_of(result.output, "conversation", "train")}
    assert "quilt_instruct/quilt_instruct_107k/Vid_02-abc_0" in train_ids
    assert "quilt_instruct/quilt_instruct_107k/Vid_02-abc_1" not in train_ids
    assert result.manifest["recipe"] == "xl"
    assert result.manifest["license"] == "other"  # pmc_vqa has no licence id; the table lists each one
    card = (result.output / "README.md").read_text()
    assert "**no-derivatives**" in card and "**non-commercial**" in card


def test_sample_writers_give_every_new_source_in_its_native_layout(tmp_path):
    from pathenhanceds.sample import write_sample

    sample_sources = write_sample(tmp_path / "raw", sources="xl")
    assert set(NEW) <= set(sample_sources)
    result = build({k: sample_sources[k] for k in NEW}, tmp_path / "out", recipe="xl")
    counts = result.counts
    assert set(counts["conversation"]["train"]) == {"pathgen_instruct", "quilt_instruct", "pathinstruct"}
    assert sum(n for split in counts["vqa"].values() for n in split.values()) == 5  # pathology part only
    assert result.manifest["synthetic"] is True


def test_licence_helpers_rank_nd_most_restrictive():
    assert dataset_license(["CC-BY-4.0", "CC-BY-NC-ND-3.0", "CC-BY-NC-SA-4.0"]) == "cc-by-nc-nd-3.0"
    assert dataset_license(["cc-by-nc-2.0", "cc-by-4.0"]) == "cc-by-nc-2.0"
    assert is_no_derivatives(["CC-BY-NC-ND-3.0"]) and not is_no_derivatives(["CC-BY-NC-SA-4.0", "other"])
    assert is_non_commercial(["CC-BY-NC-2.0"])
