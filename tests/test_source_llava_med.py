"""LLaVA-Med reader and planners, on native-format fixtures written here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pathenhanceds.errors import InputError, RecordError
from pathenhanceds.selection import get_planner, resolve_options
from pathenhanceds.selection.base import PlanInput
from pathenhanceds.sources import BuildContext, get_source
from pathenhanceds.sources.instruct_json import strip_image_token
from pathenhanceds.sources.llava_med import parse_dialogue, pmid_of

DOMAINS = ("chest_xray", "mri", "ct_scan", "histology", "gross")
_counter = iter(range(10**6))


def jpeg(path: Path, seed: int | None = None) -> None:
    """A small JPEG with its own bytes (distinct seeds give distinct files)."""
    rng = np.random.default_rng(next(_counter) if seed is None else seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "RGB").save(path, format="JPEG")


def flags(domain: str) -> dict[str, bool]:
    return {d: d == domain for d in DOMAINS}


def dialogue(pair_id: str, pairs: int = 1, *, image_first: bool = True, key: str = "conversations",
             domain: str | None = None, tag: str = "") -> dict[str, Any]:
    turns = []
    for k in range(pairs):
        q = f"Question {k} about {pair_id}{tag}?"
        if k == 0:
            q = f"<image>\n{q}" if image_first else f"{q}\n<image>"
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": f"Answer {k} for {pair_id}{tag}."}]
    rec: dict[str, Any] = {"id": pair_id, "image": f"{pair_id}.jpg", key: turns}
    if domain is not None:
        rec["domain"] = flags(domain)
    return rec


def write_llava(root: Path, files: dict[str, list[Any]], images: list[str], fig_captions: Any = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, records in files.items():
        (root / f"llava_med_instruct_{name}.json").write_text(json.dumps(records))
    if fig_captions is not None:
        (root / "llava_med_instruct_fig_captions.json").write_text(json.dumps(fig_captions))
    (root / "images").mkdir(exist_ok=True)
    for pair_id in images:
        jpeg(root / "images" / f"{pair_id}.jpg")
    return root


def read(root: Path, on_error: str = "fail"):
    src = get_source("llava_med")(root)
    ctx = BuildContext(on_error=on_error)
    return src, ctx, list(src.records(ctx))


def plan(src, records, ctx, recipe: str = "default", seed: int = 0, **options):
    return get_planner(recipe, "llava_med")(PlanInput(src, records, resolve_options(options), seed, ctx))


# ---- pure helpers ----


@pytest.mark.parametrize("text, expected", [
    ("<image>\nWhat is shown?", "What is shown?"),
    ("What is shown?\n<image>", "What is shown?"),
    ("<image>What is shown?", "What is shown?"),
    ("Context line.\n<image>\nWhat is shown?", "Context line.\nWhat is shown?"),
    ("What is <image> shown?", "What is shown?"),
    ("  What is shown?  ", "What is shown?"),
])
def test_strip_image_token(text, expected):
    assert strip_image_token(text) == expected


def test_pmid_of():
    assert pmid_of("32432162_F1") == "32432162"
    assert pmid_of("32432162_F1_a") == "32432162"


@pytest.mark.parametrize("key", ["conversations", "conversatons"])
@pytest.mark.parametrize("image_first", [True, False])
def test_parse_dialogue_spellings_and_token_position(key, image_first):
    d = parse_dialogue(dialogue("1_F1", 2, image_first=image_first, key=key, domain="histology"), Path("x.json"), 0)
    assert d.pair_id == "1_F1"
    assert [r for r, _ in d.turns] == ["user", "assistant", "user", "assistant"]
    assert d.turns[0][1] == "Question 0 about 1_F1?"  # token and its newline gone
    assert all("<image>" not in t for _, t in d.turns)
    assert d.domains == ("histology",)


def _bad(kind: str) -> Any:
    rec = dialogue("5_F1", 2, domain="histology")
    if kind == "not_object":
        return ["5_F1"]
    if kind == "no_conversations":
        del rec["conversations"]
    elif kind == "empty_conversations":
        rec["conversations"] = []
    elif kind == "unknown_role":
        rec["conversations"][1]["from"] = "doctor"
    elif kind == "unhashable_role":
        rec["conversations"][1]["from"] = ["gpt"]
    elif kind == "no_image_token":
        rec["conversations"][0]["value"] = "What is shown?"
    elif kind == "two_image_tokens":
        rec["conversations"][0]["value"] = "<image>\n<image>\nWhat?"
    elif kind == "token_in_later_turn":
        rec["conversations"][2]["value"] += "\n<image>"
    elif kind == "not_alternating":
        rec["conversations"][1]["from"] = "human"
    elif kind == "ends_with_human":
        rec["conversations"].pop()
    elif kind == "bad_domain":
        rec["domain"] = ["histology"]
    elif kind == "no_id":
        del rec["id"], rec["image"]
    return rec


@pytest.mark.parametrize("kind, message", [
    ("not_object", "not an object"),
    ("no_conversations", "no conversations"),
    ("empty_conversations", "no conversations"),
    ("unknown_role", "unknown role 'doctor'"),
    ("unhashable_role", "unknown role \\['gpt'\\]"),
    ("two_image_tokens", "2 '<image>' tokens, expected at most one"),
    ("token_in_later_turn", "turn 2 holds an '<image>'"),
    ("not_alternating", "must alternate"),
    ("ends_with_human", "unanswered"),
    ("bad_domain", "'domain' is not an object"),
    ("no_id", "neither an 'id'"),
])
def test_bad_records_raise_record_error_naming_file_and_record(tmp_path, kind, message):
    good = dialogue("4_F1", domain="histology")
    root = write_llava(tmp_path / "raw", {"10k": [good, _bad(kind)]}, ["4_F1", "5_F1"])
    with pytest.raises(RecordError, match=message) as info:
        read(root)
    assert info.value.file.endswith("llava_med_instruct_10k.json")
    assert info.value.record.startswith("llava_med_instruct_10k.json[1]")
    # --on-error skip: the bad record is listed, the good one kept
    _, ctx, records = read(root, on_error="skip")
    assert [r.record_id for r in records] == ["10k/4_F1"]
    assert len(ctx.skipped) == 1 and ctx.skipped[0]["record"].startswith("llava_med_instruct_10k.json[1]")


def test_instruct_file_that_is_not_a_list_is_an_input_error(tmp_path):
    root = write_llava(tmp_path / "raw", {"10k": {"4_F1": dialogue("4_F1")}}, ["4_F1"])
    with pytest.raises(InputError, match="expected a list") as info:
        read(root, on_error="skip")
    assert not isinstance(info.value, RecordError)
    assert info.value.file.endswith("llava_med_instruct_10k.json")


def test_layout_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no LLaVA-Med instruct file"):
        get_source("llava_med")(empty)
    no_images = tmp_path / "noimg"
    no_images.mkdir()
    (no_images / "llava_med_instruct_10k.json").write_text("[]")
    with pytest.raises(InputError, match="no images/ folder"):
        get_source("llava_med")(no_images)


# ---- histology selection ----


def test_histology_from_domain(tmp_path):
    records = [dialogue("1_F1", domain="histology"), dialogue("2_F1", domain="ct_scan"),
               dialogue("3_F1", domain="gross"), dialogue("4_F1", domain="histology")]
    root = write_llava(tmp_path / "raw", {"10k": records}, ["1_F1", "2_F1", "3_F1", "4_F1"])
    src, ctx, recs = read(root)
    rows = plan(src, recs, ctx, "paper")
    assert sorted(r.id for r in rows) == ["llava_med/10k/1_F1", "llava_med/10k/4_F1"]
    single = get_source("llava_med")(root / "llava_med_instruct_10k.json")  # one file works too
    assert [r.record_id for r in single.records(BuildContext())] == [r.record_id for r in recs]
    rows = plan(src, recs, ctx, "paper", llava_med_domains="histology,gross")
    assert len(rows) == 3
    with pytest.raises(InputError, match="unknown domains"):
        plan(src, recs, ctx, "paper", llava_med_domains="histology,xray")


def _captions(layout: str, figures: dict[str, str]) -> Any:
    entries = [{"pmid": pmid_of(p), "pair_id": p, "fig_caption": "c", "in_text_mention": None, "domain": flags(d)}
               for p, d in figures.items()]
    if layout == "list":
        return entries
    if layout == "by_domain":  # grouped by domain; entries may omit their own domain
        grouped: dict[str, list] = {d: [] for d in DOMAINS}
        for e, d in zip(entries, figures.values(), strict=True):
            grouped[d].append({k: v for k, v in e.items() if k != "domain"})
        return grouped
    return {e["pair_id"]: e for e in entries}  # keyed by pair_id


@pytest.mark.parametrize("layout", ["list", "by_domain", "by_pair_id"])
def test_histology_by_joining_fig_captions(tmp_path, layout):
    figures = {"1_F1": "histology", "2_F1": "mri", "3_F1": "histology"}
    records = [dialogue(p, key="conversatons", image_first=False) for p in [*figures, "9_F1"]]
    root = write_llava(tmp_path / "raw", {"60k": records}, [*figures, "9_F1"], _captions(layout, figures))
    src, ctx, recs = read(root)
    assert {r.record_id: r.fields["domains"] for r in recs} == {
        "60k/1_F1": ("histology",), "60k/2_F1": ("mri",), "60k/3_F1": ("histology",), "60k/9_F1": None}
    rows = plan(src, recs, ctx, "paper")
    assert [r.id for r in rows] == ["llava_med/60k/1_F1", "llava_med/60k/3_F1"]
    assert any("1 dialogue(s) have no domain" in n for n in ctx.notes)


def test_missing_fig_captions_when_domain_is_absent(tmp_path):
    root = write_llava(tmp_path / "raw", {"60k": [dialogue("1_F1")]}, ["1_F1"])
    with pytest.raises(InputError, match="without 'domain'.*llava_med_instruct_fig_captions.json"):
        read(root)


def test_record_domain_wins_over_fig_captions(tmp_path):
    root = write_llava(tmp_path / "raw", {"10k": [dialogue("1_F1", domain="histology")]}, ["1_F1"],
                       _captions("list", {"1_F1": "mri"}))
    _, _, recs = read(root)
    assert recs[0].fields["domains"] == ("histology",)


# ---- missing images, duplicates, ids ----


def test_missing_images_are_counted_not_errors(tmp_path):
    records = [dialogue(f"{i}_F1", domain="histology" if i % 2 else "mri") for i in range(6)]
    root = write_llava(tmp_path / "raw", {"10k": records}, ["0_F1", "1_F1", "3_F1"])
    src, ctx, recs = read(root, on_error="fail")
    assert [r.record_id for r in recs] == ["10k/0_F1", "10k/1_F1", "10k/3_F1"]
    assert src.stats["missing_images"] == 3 and src.stats["missing_images_histology"] == 1
    assert ctx.skipped == []
    assert any("3 dialogue(s) skipped because their image file is missing (1 of them histology)" in n
               for n in ctx.notes)


def test_record_image_field_is_used(tmp_path):
    rec = dialogue("1_F1", domain="histology")
    rec["image"] = "sub/other_name.jpg"
    root = write_llava(tmp_path / "raw", {"10k": [rec]}, [])
    jpeg(root / "images" / "sub" / "other_name.jpg")
    _, _, recs = read(root)
    assert recs[0].locator[1].endswith("other_name.jpg")
    rec["image"] = "../escape.jpg"
    (root / "llava_med_instruct_10k.json").write_text(json.dumps([rec]))
    with pytest.raises(RecordError, match="outside the images folder"):
        read(root)


def test_same_figure_in_10k_and_60k_ids_namespaced_and_exact_duplicates_dropped(tmp_path):
    a10 = dialogue("7_F1", domain="histology")
    a60 = dialogue("7_F1", domain="histology", tag=" (60k wording)")
    files = {
        "10k": [a10, dialogue("8_F1", domain="histology")],
        "60k": [a60, dialogue("8_F1", domain="histology"),  # exact repeat of the 10k dialogue
                dialogue("7_F1", domain="histology", tag=" (second)")],  # same figure again, new dialogue
    }
    root = write_llava(tmp_path / "raw", files, ["7_F1", "8_F1"])
    src, ctx, recs = read(root)
    assert [r.record_id for r in recs] == ["10k/7_F1", "10k/8_F1", "60k/7_F1", "60k/7_F1-2"]
    assert src.stats["duplicates"] == 1
    assert any("1 exact duplicate" in n for n in ctx.notes)
    rows = plan(src, recs, ctx, "default")
    assert len({r.id for r in rows}) == 4
    assert len({r.split for r in rows if r.record.fields["pmid"] == "7"}) == 1


def test_paper_recipe_counts_follow_the_rules(tmp_path):
    files = {
        "10k": [
            dialogue("100_F1", 3, domain="histology"),     # kept: 3 pairs
            dialogue("100_F2", 1, domain="histology"),     # image missing: skipped
            dialogue("101_F1", 2, domain="ct_scan"),       # not histology
            dialogue("102_F1", 1, domain="histology"),     # kept: 1 pair
        ],
        "60k": [
            dialogue("100_F1", 2, domain="histology", tag=" v60"),  # same figure, other dialogue: kept
            dialogue("102_F1", 1, domain="histology"),              # exact duplicate of 10k: dropped
            dialogue("103_F1", 2, domain="gross"),                  # not histology
        ],
        "60k_inline_mention": [
            dialogue("104_F1", 4, key="conversatons", image_first=False),  # histology via fig captions: kept
            dialogue("105_F1", 1, key="conversatons", image_first=False),  # mri via fig captions
            dialogue("106_F1", 1, key="conversatons", image_first=False),  # not in fig captions
        ],
    }
    captions = _captions("list", {"104_F1": "histology", "105_F1": "mri"})
    root = write_llava(tmp_path / "raw", files, ["100_F1", "101_F1", "102_F1", "103_F1", "104_F1", "105_F1",
                                                  "106_F1"], captions)
    src, ctx, recs = read(root)
    rows = plan(src, recs, ctx, "paper")
    assert [r.id for r in rows] == ["llava_med/10k/100_F1", "llava_med/10k/102_F1", "llava_med/60k/100_F1",
                                    "llava_med/60k_inline_mention/104_F1"]
    assert {r.split for r in rows} == {"train"} and {r.task for r in rows} == {"conversation"}
    assert sum(len(r.turns) // 2 for r in rows) == 3 + 1 + 2 + 4
    assert any("kept 4 of 8 dialogues with images (histology), 10 QA pairs" in n for n in ctx.notes)
    assert rows[3].turns[0] == ("user", "Question 0 about 104_F1?")


def test_default_split_groups_by_pmid(tmp_path):
    records = [dialogue(f"{1000 + i}_F{j}", domain="histology") for i in range(60) for j in range(1, 4)]
    root = write_llava(tmp_path / "raw", {"10k": records}, [r["id"] for r in records])
    # two papers that share a byte-identical figure must land in one split as well
    (root / "images" / "1059_F1.jpg").write_bytes((root / "images" / "1000_F1.jpg").read_bytes())
    src, ctx, recs = read(root)
    rows = plan(src, recs, ctx, llava_med_validation_fraction=0.2, llava_med_test_fraction=0.2)
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r.record.fields["pmid"], set()).add(r.split)
    assert all(len(s) == 1 for s in split_of.values())  # no PMID in two splits
    assert {s for ss in split_of.values() for s in ss} == {"train", "validation", "test"}
    assert split_of["1059"] == split_of["1000"]
    groups = {r.fields["pmid"]: r.fields["group"] for r in recs}
    assert groups["1059"] == groups["1000"] == "1000" and groups["1058"] == "1058"
    again = plan(src, recs, ctx, llava_med_validation_fraction=0.2, llava_med_test_fraction=0.2)
    assert [r.split for r in again] == [r.split for r in rows]  # seeded, deterministic
    other_seed = plan(src, recs, ctx, seed=1, llava_med_validation_fraction=0.2, llava_med_test_fraction=0.2)
    assert [r.split for r in other_seed] != [r.split for r in rows]
    with pytest.raises(InputError, match="must be >= 0 and < 1"):
        plan(src, recs, ctx, llava_med_validation_fraction=0.6, llava_med_test_fraction=0.5)


# ---- sample writer, full build, CLI ----


def _small_sizes():
    from pathenhanceds.sample import SampleSizes

    return SampleSizes(llava_med_papers=12, openpath_tweets=20)


def test_sample_writer_is_deterministic_and_covers_the_edge_cases(tmp_path):
    from pathenhanceds.sample import llava_med as writer

    for name in ("a", "b"):
        writer.write(tmp_path / name, np.random.default_rng(3), _small_sizes())
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    ten_k = json.loads((tmp_path / "a/instruct/llava_med_instruct_10k.json").read_text())
    inline = json.loads((tmp_path / "a/instruct/llava_med_instruct_60k_inline_mention.json").read_text())
    assert all("domain" in r and "conversations" in r for r in ten_k)
    assert all("domain" not in r and "conversatons" in r for r in inline)
    assert all(r["conversatons"][0]["value"].endswith("<image>") for r in inline)
    src, ctx, recs = read(tmp_path / "a")
    assert src.stats["missing_images"] > 0 and src.stats["duplicates"] == 1
    assert {d for r in recs for d in r.fields["domains"]} - {"histology"}  # non-histology figures exist


def test_full_build_loads_conversation_and_captioning(tmp_path):
    import datasets

    import pathenhanceds
    from pathenhanceds.sample import MARKER
    from pathenhanceds.sample import llava_med as llava_writer
    from pathenhanceds.sample import openpath as openpath_writer

    raw = tmp_path / "raw"
    for name, writer in (("llava_med", llava_writer), ("openpath", openpath_writer)):
        (raw / name).mkdir(parents=True)
        (raw / name / MARKER).write_text("synthetic")
        writer.write(raw / name, np.random.default_rng(0), _small_sizes())
    out = tmp_path / "out"
    result = pathenhanceds.build({"llava_med": raw / "llava_med", "openpath": raw / "openpath"}, out,
                                 options={"llava_med_validation_fraction": 0.25, "llava_med_test_fraction": 0.25})
    assert result.manifest["synthetic"] is True
    assert any(n.startswith("llava_med: ") and "image file is missing" in n for n in result.manifest["notes"])
    conv = datasets.load_dataset(str(out), "conversation")
    assert set(conv) == {"train", "validation", "test"}
    for row in conv["train"]:
        assert row["source"] == "llava_med" and row["task"] == "conversation"
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) >= 2
        assert row["messages"][0]["content"][0] == {"type": "image", "text": None}
        parts = [p for m in row["messages"] for p in m["content"]]
        assert sum(p["type"] == "image" for p in parts) == 1 and len(row["images"]) == 1
        assert not any("<image>" in (p["text"] or "") for p in parts)
        assert row["license"] == "CC-BY-NC-4.0"
    assert max(len(r["messages"]) for r in conv["train"]) > 2  # multi-turn dialogues kept whole
    pmids: dict[str, set[str]] = {}
    for split, ds in conv.items():
        for rid in ds["id"]:
            pmids.setdefault(rid.split("/")[2].split("_")[0], set()).add(split)
    assert all(len(s) == 1 for s in pmids.values())
    cap = datasets.load_dataset(str(out), "captioning")
    rows = [r for split in cap.values() for r in split]
    assert rows and {r["source"] for r in rows} == {"openpath"}
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert [p["type"] for p in row["messages"][0]["content"]] == ["image", "text"]
        answer = row["messages"][1]["content"][0]["text"]
        assert "http" not in answer and "@" not in answer and not answer.rstrip().endswith("#synthetic")


def test_cli_bad_instruct_file_exits_2_without_output(tmp_path, capsys):
    from pathinsight_models.cli import main

    root = write_llava(tmp_path / "raw", {"10k": [dialogue("1_F1", domain="histology"), _bad("unknown_role")]},
                       ["1_F1", "5_F1"])
    out = tmp_path / "out"
    code = main(["data", "build", "--source", f"llava_med={root}", "--output", str(out)])
    assert code == 2
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    err = capsys.readouterr().err
    assert "unknown role" in err and "llava_med_instruct_10k.json[1]" in err
    (root / "llava_med_instruct_10k.json").write_text('{"not": "a list"}')
    assert main(["data", "build", "--source", f"llava_med={root}", "--output", str(out)]) == 2
    assert not out.exists()
