"""Task scoring, PathVQA modes, PathMMU, bootstrap, `eval score` and `eval compare` (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nltk.translate.bleu_score import sentence_bleu
from sklearn.metrics import f1_score, precision_recall_fscore_support

from pathenhanceds.errors import InputError
from pathenhanceds.labels import CRC_CLASSES
from pathenhanceds.schema import make_messages
from pathinsight_models.cli import main
from pathinsight_models.evaluation.bootstrap import bootstrap, cluster_index, mean_stat
from pathinsight_models.evaluation.scoring import score_items
from pathinsight_models.evaluation.tasks import conversation_items, get_task, single_turn_items
from pathinsight_models.evaluation.tasks.pathmmu import read_pathmmu
from pathinsight_models.metrics.bleu1 import bleu1
from pathinsight_models.metrics.pathvqa import pathvqa
from pathinsight_models.metrics.rouge import rouge

NAMES = list(CRC_CLASSES.values())


# --- PathVQA modes -----------------------------------------------------------------------------


def test_normalisation():
    assert pathvqa.normalize("The answer is 3.5, isn't it?") == "answer is 3.5 is not it"
    assert pathvqa.normalize("No. It's 1,000 cells.") == "no it is 1000 cells"
    assert pathvqa.normalize("An 'ulcer' (gastric)") == "ulcer gastric"


@pytest.mark.parametrize("pred,ref,llava,quilt,exact", [
    ("No", "no", True, True, True),
    ("No, it is not.", "no", True, True, False),
    ("yes", "no", False, False, False),
    ("Normal", "no", True, False, False),        # llava-med flaw: "no" is a substring of "normal"
    ("It is not malignant", "no", True, True, False),  # llava-med: "no" inside "not"; quilt: "not" -> no
    ("Nothing abnormal", "no", True, False, False),
    ("Yes.", "yes", True, True, True),
    ("I see cells", "yes", False, True, False),  # quilt defaults to "yes" without no/not
    ("There is no tumour", "yes", False, False, False),
])
def test_closed_rules_of_each_mode(pred, ref, llava, quilt, exact):
    assert pathvqa.score_item(pred, ref, "closed", "llava-med")["closed_hit"] is llava
    assert pathvqa.score_item(pred, ref, "closed", "quilt")["closed_hit"] is quilt
    assert pathvqa.score_item(pred, ref, "closed", "exact")["closed_hit"] is exact


def test_open_metrics_of_each_mode():
    ref, pred = "squamous cell carcinoma", "The squamous carcinoma"
    lm = pathvqa.score_item(pred, ref, "open", "llava-med")
    assert lm["open_recall"] == pytest.approx(2 / 3)
    assert lm["open_precision"] == pytest.approx(1.0)
    assert lm["open_f1"] == pytest.approx(0.8)
    assert lm["open_bleu1"] == pytest.approx(sentence_bleu([ref.split()], ["squamous", "carcinoma"], weights=(1.0,)))
    assert pathvqa.score_item(pred, ref, "open", "quilt") == {"closed": False, "open_recall": pytest.approx(2 / 3),
                                                              "open_precision": 1.0, "open_f1": pytest.approx(0.8)}
    assert pathvqa.score_item(pred, ref, "open", "exact")["open_accuracy"] == 0.0
    assert pathvqa.score_item("The squamous cell carcinoma.", ref, "open", "exact")["open_accuracy"] == 1.0


def test_pathvqa_aggregation_and_unparsed():
    preds = ["normal", "yes", "I see cells", "lung tissue", "kidney"]
    refs = ["no", "yes", "yes", "lung", "liver"]
    out = pathvqa.compute(preds, refs, mode="llava-med")
    assert out["n_closed"] == 3 and out["n_open"] == 2
    assert out["closed_accuracy"] == pytest.approx(2 / 3)
    assert out["open_recall"] == pytest.approx(0.5)
    assert out["closed_unparsed"] == 2  # "normal" and "I see cells" hold no yes/no token
    assert pathvqa.compute(preds, refs, mode="quilt")["closed_accuracy"] == pytest.approx(2 / 3)
    assert pathvqa.compute(preds, refs, mode="exact")["closed_accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="unknown PathVQA mode"):
        pathvqa.compute(preds, refs, mode="vqa-v2")


# --- task scoring ------------------------------------------------------------------------------


def _crc_items():
    preds = ["Adipose", "ADI", "debris", "Mucus", "Lymphocytes", "nonsense", "TUM", "stroma", "", "Smooth muscle"]
    refs = ["Adipose", "Adipose", "Debris", "Debris", "Lymphocytes", "Mucus", "Colorectal Adenocarcinoma Epithelium",
            "Cancer-Associated Stroma", "Smooth Muscle", "Smooth Muscle"]
    return [{"id": f"crc/{i}", "prediction": p, "reference": r, "label": r} for i, (p, r) in enumerate(zip(preds, refs, strict=True))]


def test_crc_scoring_matches_sklearn_and_counts_unparsed():
    items = _crc_items()
    result, records = score_items("crc", items, n_resamples=200)
    parsed = [r["parsed"] or "unparsed" for r in records]
    refs = [it["label"] for it in items]
    present = [n for n in NAMES if n in refs]
    p, r, f, _ = precision_recall_fscore_support(refs, parsed, labels=present, average="macro", zero_division=0)
    m = result["metrics"]["macro"]
    assert (m["precision"]["value"], m["recall"]["value"], m["f1"]["value"]) == pytest.approx((p, r, f))
    assert result["parse_failures"] == 2 and result["parse_failure_reasons"] == {"no class named": 1, "empty answer": 1}
    assert [r["correct"] for r in records] == [True, True, True, False, True, False, True, True, False, True]
    assert result["extras"]["confusion_matrix"][NAMES.index("Mucus")][-1] == 1  # the unparsed column
    for entry in m.values():
        lo, hi = entry["ci"]
        assert lo <= entry["value"] + 1e-12 and entry["value"] - 1e-12 <= hi


def test_bootstrap_is_reproducible_with_seed():
    items = _crc_items()
    a, _ = score_items("crc", items, n_resamples=300, seed=7)
    b, _ = score_items("crc", items, n_resamples=300, seed=7)
    c, _ = score_items("crc", items, n_resamples=300, seed=8)
    assert a["metrics"] == b["metrics"]
    assert a["metrics"]["macro"]["f1"]["ci"] != c["metrics"]["macro"]["f1"]["ci"]
    assert a["bootstrap"] == {**a["bootstrap"], "seed": 7, "n_resamples": 300, "method": "percentile"}


def test_bootstrap_resamples_whole_clusters():
    # cluster A: three items worth 1, cluster B: one item worth 0. Resampling two clusters can only
    # give AA (1), AB (0.75) or BB (0); an item-level bootstrap would also give 0.5, 0.25...
    clusters, n = cluster_index(["A", "A", "A", "B"])
    assert n == 2
    stat = mean_stat([1, 1, 1, 0])
    from pathinsight_models.evaluation import bootstrap as bs

    draws = stat.weighted(np.array([[2.0, 2.0, 2.0, 0.0], [1, 1, 1, 1], [0, 0, 0, 2]]))
    assert draws.tolist() == [1.0, 0.75, 0.0]
    ci = bs.bootstrap({"m": stat}, clusters, n_resamples=500, seed=0, confidence=0.5)["m"]
    assert set(ci) <= {0.0, 0.75, 1.0}
    assert bootstrap({"m": mean_stat([None, None])}, np.array([0, 1]), 50)["m"] is None


def test_pcam_scoring():
    preds = ["Yes, this image contains cancerous cells.", "No.", "no", "I am not sure", "yes", "Benign."]
    labels = ["yes", "no", "yes", "yes", "no", "no"]
    items = [{"id": str(i), "prediction": p, "reference": "", "label": lab} for i, (p, lab) in enumerate(zip(preds, labels, strict=True))]
    result, records = score_items("pcam", items, n_resamples=100)
    m = result["metrics"]["binary"]
    parsed = [r["parsed"] or "unparsed" for r in records]
    assert m["accuracy"]["value"] == pytest.approx(3 / 6)
    assert m["f1"]["value"] == pytest.approx(f1_score(labels, parsed, labels=["yes"], average="macro"))
    assert m["specificity"]["value"] == pytest.approx(2 / 3)
    assert result["parse_failures"] == 1


def test_captioning_per_caption_multi_reference_and_conclusion():
    caps = {"img1": ["polarity is lost. high grade.", "nuclear crowding is severe. high grade."],
            "img2": ["nucleoli are inconspicuous. normal."]}
    preds = ["nuclear crowding is severe. high grade.", "polarity is lost. low grade.", "Normal."]
    items = [
        {"id": "a", "group": "img1", "reference": caps["img1"][0], "label": "high grade", "prediction": preds[0]},
        {"id": "b", "group": "img1", "reference": caps["img1"][1], "label": "high grade", "prediction": preds[1]},
        {"id": "c", "group": "img2", "reference": caps["img2"][0], "label": "normal", "prediction": preds[2]},
    ]
    result, records = score_items("captioning", items, n_resamples=100)
    per = result["metrics"]["per-caption"]
    refs = [it["reference"] for it in items]
    assert per["rouge1"]["value"] == pytest.approx(rouge.compute(preds, refs)["rouge1"])
    assert per["bleu1"]["value"] == pytest.approx(bleu1.compute(preds, refs)["bleu1"])
    assert per["conclusion_accuracy"]["value"] == pytest.approx(2 / 3)
    multi = result["metrics"]["multi-reference"]
    # one prediction per image (its first row's) against all captions of that image
    assert multi["rouge1"]["value"] == pytest.approx(
        rouge.compute([preds[0], preds[2]], [caps["img1"], caps["img2"]])["rouge1"])
    assert multi["corpus_bleu1"]["value"] == pytest.approx(
        bleu1.compute([preds[0], preds[2]], [caps["img1"], caps["img2"]])["corpus_bleu1"])
    assert result["extras"]["n_images"] == 2 and result["bootstrap"]["unit"] == "image"
    assert [r["parsed"] for r in records] == ["high grade", "low grade", "normal"]


def test_pathmmu_scoring_counts_unparsed_as_wrong():
    opts = ["A) x", "B) y", "C) z"]
    items = [{"id": str(i), "options": opts, "reference": ref, "prediction": p, "subset": s}
             for i, (p, ref, s) in enumerate([("A", "A", "PubMed"), ("no idea", "B", "PubMed"), ("(C)", "B", "Atlas"),
                                              ("z", "C", "Atlas")])]
    result, records = score_items("pathmmu", items, n_resamples=50)
    m = result["metrics"]["strict"]
    assert m["accuracy"]["value"] == pytest.approx(0.5)
    assert m["accuracy_PubMed"]["value"] == pytest.approx(0.5) and m["accuracy_Atlas"]["value"] == pytest.approx(0.5)
    assert result["parse_failures"] == 1 and records[1]["parsed"] is None and records[1]["correct"] is False


def test_conversation_items_use_reference_history():
    row = {"id": "conv/1", "messages": make_messages([("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")]),
           "image_sha256": ["abc"]}
    items = conversation_items(row)
    assert [it["reference"] for it in items] == ["a1", "a2"]
    assert [m["role"] for m in items[1]["messages"]] == ["user", "assistant", "user"]
    assert items[1]["messages"][1]["content"][0]["text"] == "a1"  # teacher forcing: reference turn as history
    assert items[1]["prompt"] == "q2" and items[0]["group"] == "abc"
    single = single_turn_items({**row, "label": None, "answer_type": None})
    assert len(single) == 1 and single[0]["reference"] == "a1"
    scored = get_task("conversation").score([{**it, "prediction": it["reference"]} for it in items])
    assert scored.metrics["teacher-forced"]["token_f1"] == 1.0


def test_unknown_task_and_mode_are_input_errors():
    with pytest.raises(InputError, match="unknown evaluation task"):
        get_task("mmlu")
    with pytest.raises(InputError, match="no mode"):
        get_task("pathvqa").score([], ["strict"])


# --- PathMMU reader ----------------------------------------------------------------------------


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 100, 50)).save(path)


@pytest.mark.parametrize("layout", ["dict_of_lists", "list", "dict_of_splits"])
def test_pathmmu_reader_layouts(tmp_path, layout):
    items = [{"No": 1, "img": "images/1.png", "question": "Which?", "options": ["A) x", "B) y"], "answer": "B"},
             {"No": 2, "img": "2.png", "question": "What?", "options": ["A) u", "B) v"], "answer": "(A)"}]
    _png(tmp_path / "images" / "1.png")
    _png(tmp_path / "images" / "2.png")
    data = {"dict_of_lists": {"PubMed": items}, "list": items,
            "dict_of_splits": {"PubMed": {"test": items, "val": items[:1]}}}[layout]
    (tmp_path / "data.json").write_text(json.dumps(data))
    got = read_pathmmu(tmp_path, split="test")
    assert [it["reference"] for it in got] == ["B", "A"]
    assert got[0]["prompt"].splitlines() == ["Which?", "A) x", "B) y",
                                             "Answer with the option's letter from the given choices directly."]
    assert got[0]["image"]().size == (8, 8)
    assert got[0]["subset"] == (None if layout == "list" else "PubMed")


def test_pathmmu_reader_errors(tmp_path):
    (tmp_path / "data.json").write_text(json.dumps({"PubMed": [{"No": 1, "img": "missing.png", "question": "q",
                                                                "options": ["A) x"], "answer": "A"}]}))
    with pytest.raises(InputError, match="images not found"):
        read_pathmmu(tmp_path)
    (tmp_path / "data.json").write_text(json.dumps({"PubMed": [{"No": 1, "question": "q"}]}))
    with pytest.raises(InputError, match="lacks"):
        read_pathmmu(tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_pathmmu(tmp_path / "nowhere")


# --- eval score / compare CLI ------------------------------------------------------------------


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _vqa_rows(n_right):
    rows = []
    for i in range(8):
        closed = i % 2 == 0
        ref = ("yes" if i % 4 == 0 else "no") if closed else "squamous cell carcinoma"
        pred = ref if i < n_right else ("normal" if closed else "lymphoma")
        rows.append({"id": f"q{i}", "prediction": pred, "reference": ref, "image": f"img{i // 2}",
                     "answer_type": "closed" if closed else "open"})
    return rows


def test_eval_score_cli(tmp_path, capsys):
    preds = _write_jsonl(tmp_path / "preds.jsonl", _vqa_rows(5))
    out = tmp_path / "scored"
    assert main(["eval", "score", "--task", "pathvqa", "--mode", "quilt,exact", "--predictions", str(preds),
                 "--output", str(out), "--bootstrap", "100"]) == 0
    res = json.loads((out / "results.json").read_text())
    r = res["tasks"]["pathvqa"]
    assert r["modes"] == ["quilt", "exact"] and r["n"] == 8
    expected = pathvqa.compute([x["prediction"] for x in _vqa_rows(5)], [x["reference"] for x in _vqa_rows(5)],
                               mode="quilt")
    assert r["metrics"]["quilt"]["closed_accuracy"]["value"] == pytest.approx(expected["closed_accuracy"])
    assert r["bootstrap"]["unit"] == "image" and r["bootstrap"]["n_units"] == 4
    lines = [json.loads(x) for x in (out / "predictions" / "pathvqa.jsonl").read_text().splitlines()]
    assert {"id", "prompt", "prediction", "reference", "parsed", "correct"} <= set(lines[0])
    assert "quilt" in (out / "report.md").read_text()
    assert "closed_accuracy" in capsys.readouterr().out


def test_eval_score_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "prediction": "x"}\n')
    assert main(["eval", "score", "--task", "crc", "--predictions", str(bad)]) == 2
    assert "lacks reference" in capsys.readouterr().err
    bad.write_text('{"id": "1", "prediction": "Adipose", "reference": "Bone"}\n')
    assert main(["eval", "score", "--task", "crc", "--predictions", str(bad)]) == 2
    bad.write_text("not json\n")
    assert main(["eval", "score", "--task", "crc", "--predictions", str(bad)]) == 2


def test_eval_compare_renders_table(tmp_path, capsys):
    dirs = []
    for name, right in (("base", 2), ("tuned", 7)):
        preds = _write_jsonl(tmp_path / f"{name}.jsonl", _vqa_rows(right))
        assert main(["eval", "score", "--task", "pathvqa", "--predictions", str(preds),
                     "--output", str(tmp_path / name), "--bootstrap", "100"]) == 0
        dirs.append(tmp_path / name / "results.json")
    capsys.readouterr()
    assert main(["eval", "compare", *map(str, dirs), "--labels", "base,tuned", "--output", str(tmp_path / "cmp")]) == 0
    md = capsys.readouterr().out
    header, sep, base, tuned = md.splitlines()[:4]
    assert "PathVQA closed (llava-med)" in header and "PathVQA open recall (llava-med)" in header
    assert base.startswith("| base |") and tuned.startswith("| tuned |")
    assert "[" in base and "]" in base  # CIs shown
    base_val = json.loads(dirs[0].read_text())["tasks"]["pathvqa"]["metrics"]["llava-med"]["closed_accuracy"]["value"]
    assert f"{base_val:.3f}" in base
    png = (tmp_path / "cmp" / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cmp" / "compare.md").read_text() in md


def test_compare_flags_incomparable_runs(tmp_path):
    from pathinsight_models.evaluation.report import comparison, load_results

    a = _write_jsonl(tmp_path / "a.jsonl", _vqa_rows(3))
    b = _write_jsonl(tmp_path / "b.jsonl", _vqa_rows(3)[:6])
    for name, f in (("a", a), ("b", b)):
        main(["eval", "score", "--task", "pathvqa", "--predictions", str(f), "--output", str(tmp_path / name),
              "--bootstrap", "0"])
    grid = comparison(load_results([tmp_path / "a", tmp_path / "b"]))
    assert any("not comparable" in n for n in grid["notes"])
    assert [r["label"] for r in grid["rows"]] == ["predictions:a.jsonl", "predictions:b.jsonl"]
    with pytest.raises(InputError, match="labels"):
        comparison(load_results([tmp_path / "a"]), labels=["x", "y"])


def test_select_rows_limit_keeps_whole_images_and_is_seeded():
    from datasets import Dataset

    from pathinsight_models.evaluation.data import select_rows

    rows = [{"id": f"r{i}", "source": "pathologist_level", "task": "captioning", "image_sha256": [f"img{i // 3}"]}
            for i in range(12)]
    rows.append({"id": "x", "source": "crc", "task": "classification", "image_sha256": ["z"]})
    ds = Dataset.from_list(rows)
    task = get_task("captioning")
    assert select_rows(ds, task) == list(range(12))
    picked = select_rows(ds, task, limit=7, seed=1)
    assert len(picked) == 6 and len({i // 3 for i in picked}) == 2  # two whole images, never a partial one
    assert picked == select_rows(ds, task, limit=7, seed=1)
    assert {tuple(select_rows(ds, task, limit=3, seed=s)) for s in range(6)} != {tuple(picked[:3])}


def test_missing_metric_kind_renders_as_dash():
    from pathinsight_models.evaluation.report import render_report

    items = [{"id": "1", "prediction": "yes", "reference": "yes"}, {"id": "2", "prediction": "no", "reference": "yes"}]
    result, _ = score_items("pathvqa", items, n_resamples=20)
    assert result["metrics"]["llava-med"]["open_recall"] == {"value": None, "ci": None}  # no open questions
    report = render_report({"tasks": {"pathvqa": result}, "model": {"id": "m"}, "data": {}})
    assert "| llava-med | open_recall | — | — |" in report
