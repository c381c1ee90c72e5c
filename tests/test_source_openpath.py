"""OpenPath reader and planners, on hydrated-JSONL fixtures written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pathenhanceds.errors import InputError, RecordError
from pathenhanceds.selection import get_planner, resolve_options
from pathenhanceds.selection.base import PlanInput
from pathenhanceds.selection.prompts import CAPTION_BRIEF, CAPTION_DETAILED
from pathenhanceds.sources import BuildContext, get_source
from pathenhanceds.sources.openpath import (
    clean_tweet_text,
    drop_reason,
    is_question_only,
    normalise_tweet_id,
    parse_hydrated_line,
)

_counter = iter(range(10**6))
LONG = " ".join(f"word{i}" for i in range(40)) + "."


def jpeg(path: Path) -> None:
    rng = np.random.default_rng(next(_counter))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "RGB").save(path, format="JPEG")


def tweet(tid: int | str, text: str = "Sheets of atypical cells with mitoses.", image: str | None = None,
          **extra: Any) -> dict[str, Any]:
    return {"tweet_id": tid, "text": text, "image": image or f"images/{tid}.jpg", **extra}


def write_openpath(root: Path, tweets: list[Any], csv_ids: list[str] | None = None, header: bool = False,
                   make_images: bool = True, name: str = "hydrated.jsonl") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for t in tweets:
        if isinstance(t, str):  # a raw line
            lines.append(t)
            continue
        lines.append(json.dumps(t))
        if make_images and not (root / t["image"]).exists():
            jpeg(root / t["image"])
    (root / name).write_text("\n".join(lines) + "\n")
    if csv_ids is not None:
        with open(root / "dataframe_208K_rows.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            if header:
                writer.writerow(["index", "source", "hashtag", "weblink", "tweet_id", "media_id"])
            for i, tid in enumerate(csv_ids):
                writer.writerow([i, "Twitter", "#dermpath", f"https://twitter.com/x/status/{tid}", tid, "77"])
            writer.writerow([len(csv_ids), "PathLAION", "----", "https://example.org/a.jpg", "", ""])
    return root


def read(root: Path, on_error: str = "fail"):
    src = get_source("openpath")(root)
    ctx = BuildContext(on_error=on_error)
    return src, ctx, list(src.records(ctx))


def plan(src, records, ctx, recipe: str = "default", seed: int = 0, **options):
    return get_planner(recipe, "openpath")(PlanInput(src, records, resolve_options(options), seed, ctx))


# ---- text cleaning (pure) ----


@pytest.mark.parametrize("text, expected", [
    ("Classic melanoma https://t.co/abc123 #dermpath #pathology", "Classic melanoma"),
    ("@drpath @lab Nice case of #sarcoidosis with granulomas.", "Nice case of sarcoidosis with granulomas."),
    ("RT @someone: Granulomas in a lymph node #pathtwitter", "Granulomas in a lymph node"),
    ("Crypt abscesses &amp; cryptitis in UC.\n\n\nSee   pic.twitter.com/XyZ", "Crypt abscesses & cryptitis in UC. See"),
    ("Look at this: https://t.co/x", "Look at this"),
    ("Signet ring cells via @pathjournal", "Signet ring cells"),
    ("#GIpath Signet ring cells, #gastric biopsy. #pathology #path.", "GIpath Signet ring cells, gastric biopsy."),
    ("https://t.co/abc #pathology #dermpath", ""),
    ("Email me at a@b.com about the #case today", "Email me at a@b.com about the case today"),
    ("  spaced \t out  text  ", "spaced out text"),
])
def test_clean_tweet_text(text, expected):
    assert clean_tweet_text(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   ", "empty"),
    ("Wow!", "too_short"),
    ("Nice granulomas", "too_short"),
    ("What is your diagnosis?", "question_only"),
    ("Guess? Any ideas? Anyone?", "question_only"),
    ("What is this? Answer: a granuloma.", None),
    ("Granulomas in a lymph node.", None),
])
def test_drop_reason(text, reason):
    assert drop_reason(text, 3) == reason


def test_question_only_and_ids():
    assert is_question_only("Dx?") and not is_question_only("Dx: melanoma")
    assert normalise_tweet_id(123) == "123" and normalise_tweet_id(" 0123 ") == "0123"
    assert normalise_tweet_id("12.0") is None and normalise_tweet_id("12.0", allow_float_text=True) == "12"
    assert normalise_tweet_id(True) is None and normalise_tweet_id(1.5) is None and normalise_tweet_id(-4) is None
    assert normalise_tweet_id("1.2e+18", allow_float_text=True) is None


def test_parse_hydrated_line_similarity():
    item = parse_hydrated_line(b'{"tweet_id": 5, "text": "t", "image": "a.jpg", "similarity": 0.5}', Path("h.jsonl"), 3)
    assert item == {"tweet_id": "5", "text": "t", "image": "a.jpg", "similarity": 0.5}
    with pytest.raises(RecordError, match="'similarity'"):
        parse_hydrated_line(b'{"tweet_id": 5, "text": "t", "image": "a.jpg", "similarity": "hi"}', Path("h.jsonl"), 3)


# ---- bad input ----


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('["a", "list"]', "not an object"),
    ('{"text": "t", "image": "images/1.jpg"}', "'tweet_id' None is not an integer id"),
    ('{"tweet_id": "12x", "text": "t", "image": "images/1.jpg"}', "'tweet_id' '12x'"),
    ('{"tweet_id": 99, "image": "images/1.jpg"}', "'text' is missing"),
    ('{"tweet_id": 99, "text": "Sheets of cells here."}', "'image' is missing"),
    ('{"tweet_id": 99, "text": "Sheets of cells here.", "image": "images/none.jpg"}', "is missing"),
    ('{"tweet_id": 99, "text": "Sheets of cells here.", "image": "/abs/path.jpg"}', "is absolute"),
    ('{"tweet_id": 1, "tweet_id": 2, "text": "t", "image": "images/1.jpg"}', "duplicate key"),
])
def test_bad_lines_raise_record_error_naming_file_and_line(tmp_path, line, message):
    root = write_openpath(tmp_path / "raw", [tweet(1), line])
    with pytest.raises(RecordError, match=message) as info:
        read(root)
    assert info.value.file.endswith("hydrated.jsonl")
    assert info.value.record.startswith("hydrated.jsonl:2")
    src, ctx, records = read(root, on_error="skip")
    assert [r.record_id for r in records] == ["1"]
    assert len(ctx.skipped) == 1 and ctx.skipped[0]["record"].startswith("hydrated.jsonl:2")


def test_layout_and_csv_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no hydrated OpenPath .jsonl"):
        get_source("openpath")(empty)
    root = write_openpath(tmp_path / "raw", [tweet(1)])
    (root / "dataframe_208K_rows.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(InputError, match="has 3 columns, expected 6"):
        read(root)


# ---- the id list ----


@pytest.mark.parametrize("header", [False, True])
def test_tweets_checked_against_the_id_csv(tmp_path, header):
    root = write_openpath(tmp_path / "raw", [tweet(1), tweet(2), tweet(3)], csv_ids=["1", "3.0"], header=header)
    src, ctx, recs = read(root)
    assert {r.record_id: r.fields["listed"] for r in recs} == {"1": True, "2": False, "3": True}
    assert recs[0].fields["csv_source"] == "Twitter" and recs[0].fields["hashtag"] == "#dermpath"
    assert src.stats["unlisted"] == 1
    single = get_source("openpath")(root / "hydrated.jsonl")  # a JSONL path finds the CSV beside it
    assert single.jsonl == [root / "hydrated.jsonl"] and single.id_csv == root / "dataframe_208K_rows.csv"
    assert [r.id for r in plan(src, recs, ctx, "paper")] == ["openpath/1", "openpath/3"]
    assert any("1 not in dataframe_208K_rows.csv" in n for n in ctx.notes)
    assert len(plan(src, recs, ctx, "paper", openpath_unlisted="keep")) == 3
    with pytest.raises(InputError, match="openpath_unlisted"):
        plan(src, recs, ctx, "paper", openpath_unlisted="maybe")


def test_without_id_csv_nothing_is_unlisted(tmp_path):
    root = write_openpath(tmp_path / "raw", [tweet(1), tweet(2)])
    src, ctx, recs = read(root)
    assert {r.fields["listed"] for r in recs} == {None}
    assert any("not checked against the OpenPath id list" in n for n in ctx.notes)
    assert len(plan(src, recs, ctx, "paper")) == 2


def test_reindexed_csv_with_seven_columns(tmp_path):
    root = write_openpath(tmp_path / "raw", [tweet(1), tweet(2)])
    (root / "dataframe_208K_rows.csv").write_text(
        ",index,source,hashtag,weblink,tweet id,media id\n0,0,Twitter,#a,https://x,2,9\n")
    _, _, recs = read(root)
    assert {r.record_id: r.fields["listed"] for r in recs} == {"1": False, "2": True}


def test_all_tweets_unlisted_warns(tmp_path):
    root = write_openpath(tmp_path / "raw", [tweet(1)], csv_ids=["5"])
    with pytest.warns(UserWarning, match="none of the 1 hydrated tweets"):
        src, ctx, recs = read(root)
    with pytest.raises(InputError, match="no OpenPath tweet is left"):
        plan(src, recs, ctx)


# ---- planners ----


def test_paper_recipe_counts_follow_the_rules(tmp_path):
    tweets = [
        tweet(10, "Granulomas in a lymph node https://t.co/a #pathology"),            # kept
        tweet(11, "https://t.co/b #dermpath #pathology"),                             # empty
        tweet(12, "What is your diagnosis? #pathtwitter"),                           # question only
        tweet(13, "@who Wow!"),                                                        # too short
        tweet(14, LONG),                                                               # kept (detailed)
        tweet(15, "Two images of one tweet, dermal nests.", image="images/15_a.jpg"),  # kept
        tweet(15, "Two images of one tweet, dermal nests.", image="images/15_b.jpg"),  # kept
        tweet(15, "Two images of one tweet, dermal nests.", image="images/15_b.jpg"),  # repeated line: ignored
        tweet(16, "Not in the released id list, but fine."),                           # unlisted
    ]
    root = write_openpath(tmp_path / "raw", tweets, csv_ids=["10", "11", "12", "13", "14", "15"])
    src, ctx, recs = read(root)
    assert [r.record_id for r in recs] == ["10", "11", "12", "13", "14", "15", "15-2", "16"]
    assert src.stats == {"tweets": 7, "duplicates": 1, "unlisted": 1}
    rows = plan(src, recs, ctx, "paper")
    assert [r.id for r in rows] == ["openpath/10", "openpath/14", "openpath/15", "openpath/15-2"]
    assert {r.split for r in rows} == {"train"} and {r.task for r in rows} == {"captioning"}
    assert rows[0].turns[1] == ("assistant", "Granulomas in a lymph node")
    assert rows[0].turns[0][1] in CAPTION_BRIEF and rows[1].turns[0][1] in CAPTION_DETAILED
    note = next(n for n in ctx.notes if n.startswith("openpath: dropped"))
    assert note == ("openpath: dropped 1 empty after cleaning, 1 too short, 1 question-only, "
                    "1 not in dataframe_208K_rows.csv (minimum 3 words)")
    assert len(plan(src, recs, ctx, "paper", openpath_min_words=1)) == 5  # "Wow!" is kept then
    assert any("top-20000 selection was not applied" in n for n in ctx.notes)


def test_paper_top_k_uses_similarity_scores(tmp_path):
    tweets = [tweet(i, f"Caption number {i} of a lesion.", similarity=s)
              for i, s in [(1, 0.2), (2, 0.9), (3, 0.5), (4, 0.9)]]
    tweets.append(tweet(5, "Caption without any score here."))
    root = write_openpath(tmp_path / "raw", tweets)
    src, ctx, recs = read(root)
    rows = plan(src, recs, ctx, "paper", openpath_top_k=3)
    assert [r.id for r in rows] == ["openpath/2", "openpath/3", "openpath/4"]  # top 3, file order kept
    assert any("1 tweet(s) without a 'similarity' score left out" in n for n in ctx.notes)
    assert len(plan(src, recs, ctx, "paper", openpath_top_k=0)) == 5


def test_default_split_by_tweet_and_prompt_choice_is_seeded(tmp_path):
    tweets = [tweet(1000 + i, LONG if i % 2 else "Short caption of cells.") for i in range(80)]
    tweets.append(tweet(1000, "Short caption of cells.", image="images/1000_b.jpg"))
    root = write_openpath(tmp_path / "raw", tweets)
    (root / "images" / "1079.jpg").write_bytes((root / "images" / "1001.jpg").read_bytes())  # a repost
    src, ctx, recs = read(root)
    opts = {"openpath_validation_fraction": 0.2, "openpath_test_fraction": 0.2}
    rows = plan(src, recs, ctx, **opts)
    by_id = {r.id: r for r in rows}
    assert {r.split for r in rows} == {"train", "validation", "test"}
    assert by_id["openpath/1000"].split == by_id["openpath/1000-2"].split
    assert by_id["openpath/1079"].split == by_id["openpath/1001"].split
    assert by_id["openpath/1079"].record.fields["group"] == "1001"
    assert by_id["openpath/1078"].record.fields["group"] == "1078"
    for r in rows:
        words = len(r.turns[1][1].split())
        assert r.turns[0][1] in (CAPTION_DETAILED if words >= 30 else CAPTION_BRIEF)
    assert [(r.split, r.turns) for r in plan(src, recs, ctx, **opts)] == [(r.split, r.turns) for r in rows]
    other = plan(src, recs, ctx, seed=7, **opts)
    assert [r.split for r in other] != [r.split for r in rows]
    assert [r.turns[0] for r in other] != [r.turns[0] for r in rows]
    assert len({r.turns[0][1] for r in rows}) > 5  # queries are drawn, not fixed


def test_sample_writer_deterministic(tmp_path):
    from pathenhanceds.sample import SampleSizes
    from pathenhanceds.sample import openpath as writer

    sizes = SampleSizes(openpath_tweets=20)
    for name in ("a", "b"):
        writer.write(tmp_path / name, np.random.default_rng(1), sizes)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    src, ctx, recs = read(tmp_path / "a")
    reasons = {drop_reason(r.fields["caption"], 3) for r in recs}
    assert {"empty", "question_only", "too_short", None} <= reasons
    assert src.stats["unlisted"] > 0 and any(r.record_id.endswith("-2") for r in recs)


# ---- CLI ----


def test_cli_bad_line_exits_2_and_skip_mode_builds(tmp_path, capsys):
    import datasets

    from pathinsight_models.cli import main

    root = write_openpath(tmp_path / "raw", [tweet(i, f"Caption {i} of a synthetic lesion.") for i in range(6)]
                          + ["{broken"], csv_ids=[str(i) for i in range(6)])
    out = tmp_path / "out"
    assert main(["data", "build", "--source", f"openpath={root}", "--output", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    assert "hydrated.jsonl:7" in capsys.readouterr().err
    assert main(["data", "build", "--source", f"openpath={root}", "--output", str(out), "--on-error", "skip",
                 "--recipe", "paper"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["record"] for s in manifest["skipped"]] == ["hydrated.jsonl:7"]
    assert manifest["skipped"][0]["file"] == "hydrated.jsonl"
    cap = datasets.load_dataset(str(out), "captioning")
    assert cap["train"].num_rows == 6
    assert cap["train"][0]["license"] == "other (X/Twitter terms apply; tweet IDs from OpenPath)"
