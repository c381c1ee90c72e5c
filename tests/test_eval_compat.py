"""Upstream-compatible scoring (issue 12): LLaVA-Med, Quilt-LLaVA, SQuAD, PathMMU parsing.

Every expected value below was derived by hand from the upstream code (files and commits in the
module docstrings of `metrics/pathvqa/llava_med.py`, `metrics/pathvqa/quilt.py`,
`metrics/token_f1/squad.py`, `evaluation/pathmmu_parse.py`); the comment next to each case gives
the derivation. Nothing here calls the upstream code.
"""

from __future__ import annotations

import json
import logging
import math

import pytest

from pathenhanceds.errors import InputError
from pathinsight_models.evaluation import compat
from pathinsight_models.evaluation.pathmmu_parse import (
    list_prompt_formats,
    parse_pathmmu_answer,
    pathmmu_prompt,
    read_reference,
    upstream_option_text,
)
from pathinsight_models.evaluation.scoring import score_items
from pathinsight_models.evaluation.tasks.pathmmu import read_pathmmu
from pathinsight_models.metrics.pathvqa import llava_med, pathvqa, quilt
from pathinsight_models.metrics.token_f1 import squad, token_f1

norm = compat.llava_med_normalize_word


# --- LLaVA-Med normalize_word ------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    # contractions: the table maps apostrophe-less spellings to apostrophe spellings, never expands
    ("it isnt", "it isn't"),
    ("it isn't", "it isn't"),               # already has the apostrophe: untouched (no "is not")
    ("dont know", "don't know"),
    ("it's", "it's"),                       # "it's" is no key ("itll" is), so it stays
    ("somebody'd", "somebodyd"),            # the one entry that removes the apostrophe
    ("Im fine", "im fine"),                 # key "Im" is capitalised, tokens are lower-cased first
    # curly apostrophes are neither punctuation nor table keys: kept as they are
    ("isn\u2019t", "isn\u2019t"),
    ("it\u2019s normal", "it\u2019s normal"),
    # number words -> digits (manual_map), then articles dropped
    ("none of the three", "0 of 3"),
    ("Two.", "2"),                          # period stripped, lower-cased, "two" -> "2"
    ("eleven", "eleven"),                   # only none/zero..ten are mapped
    ("The", ""),                            # lower-cased before the article test
    # "-" and "/" inside words become spaces (no space next to them, no digit,digit in the text)
    ("x-ray", "x ray"),
    ("and/or", "and or"),
    # ... but are deleted when the same character touches a space anywhere in the text
    ("x-ray - chest", "xray chest"),
    # digit,digit anywhere: every punctuation character is deleted, the comma too
    ("1,000 cells/field", "1000 cellsfield"),
    # "(" touches a space -> deleted; ")" touches none -> space
    ("tumor (grade 2)", "tumor grade 2"),
    # quotes: '"' touches a space -> deleted; ":" and "'" are not punctuation here
    ('answer: "yes"', "answer: yes"),
    ("'no'", "'no'"),
    # periods: removed unless followed by a digit
    ("3.5 cm.", "3.5 cm"),
    (".5", ".5"),
    ("", ""),
])
def test_llava_med_normalize_word(text, expected):
    assert norm(text) == expected


def test_llava_med_period_limit_is_32_per_call():
    # re.UNICODE == 32 is passed as re.sub's count: 40 stray periods -> 32 removed, 8 left
    assert llava_med.PERIOD_LIMIT == 32
    assert norm("no" + "." * 40) == "no" + "." * 8
    assert norm(norm("no" + "." * 40)) == "no"  # a second call removes the rest
    long_text = " ".join(["cells."] * 40)       # 40 sentences: the last 8 keep their period
    assert norm(long_text).split() == ["cells"] * 32 + ["cells."] * 8


# --- LLaVA-Med closed rule and open metrics ----------------------------------------------------


@pytest.mark.parametrize("pred,ref,llava,quilt_hit", [
    ("No", "no", True, True),
    ("Normal", "no", True, False),             # "no" is a substring of "normal"; quilt: no no/not token -> yes
    ("It is not malignant", "no", True, True),  # substring "no" in "not"; quilt: token "not"
    ("I cannot tell", "yes", False, True),      # "cannot" contains "no" but not "yes"; quilt: "cannot" != "not" -> yes
    ("No: benign", "no", True, False),          # ":" kept, token "no:" is not "no" -> quilt says yes
    ("'no'", "no", True, False),                # "'" kept: token "'no'"
    ("no" + "." * 40, "no", True, False),       # 8 periods survive: token "no........"
    ("Yes, it is.", "yes", True, True),         # ", " -> comma deleted, final period stripped
    ("", "yes", False, True),                   # empty: no yes/no substring; quilt: [""] -> yes
    ("", "no", False, False),
])
def test_closed_rules(pred, ref, llava, quilt_hit):
    assert compat.llava_med_closed_correct(pred, ref) is llava
    assert quilt.score_item(pred, ref, closed=True).hit is quilt_hit


def test_quilt_closed_answer_and_anchor():
    assert compat.quilt_closed_answer("") == "yes"
    assert compat.quilt_closed_answer("There is no tumour, not at all") == "no"
    # anchor: the normalised prediction is cut to the normalised anchor's length (3 chars: "no ")
    assert quilt.score_item("no tumour seen", "no", closed=True, anchor="yes").hit is True
    assert quilt.score_item("no tumour seen", "no", closed=True, anchor="y").hit is False  # "n" -> yes
    with pytest.raises(ValueError, match="needs yes or no"):
        quilt.score_item("maybe", "lymphoma", closed=True)


def test_llava_med_f1_counts_prediction_tokens():
    # "cell cell cell" vs "cell nucleus": tp = 3 (prediction count of "cell"), fp = 0, fn = 1 ("nucleus")
    p, r, f1 = compat.llava_med_f1("cell cell cell", "cell nucleus")
    assert (p, r) == (1.0, 0.75) and f1 == pytest.approx(2 * 0.75 / 1.75)
    # reference repeats: tp = 1, fn = 0 (the word is in both), so recall is 1
    assert compat.llava_med_f1("cell", "cell cell") == (1.0, 1.0, 1.0)
    # tp = 0 or an empty side -> all zero
    assert compat.llava_med_f1("kidney", "liver") == (0.0, 0.0, 0.0)
    assert compat.llava_med_f1("", "liver") == (0.0, 0.0, 0.0)
    assert compat.llava_med_f1("liver", "") == (0.0, 0.0, 0.0)


def test_llava_med_open_uses_two_normalisations():
    # 40 periods: run_eval's normalisation leaves 8, calculate_f1score's second one removes them
    p, r, f1 = compat.llava_med_f1("tumor" + "." * 40, "tumor")
    assert (p, r, f1) == (1.0, 1.0, 1.0)
    # BLEU uses the once-normalised tokens: "tumor........" never matches "tumor"
    assert compat.llava_med_bleu1("tumor" + "." * 40, "tumor") == 0.0
    # 70 periods: 32 + 32 removed, 6 left -> no match even for F1
    assert compat.llava_med_f1("tumor" + "." * 70, "tumor") == (0.0, 0.0, 0.0)


# the fixed set for the aggregates (derivations in the comments)
CLOSED = [
    ("Yes, it is.", "yes"),   # "yes it is": hit; quilt yes: hit
    ("Normal", "no"),         # substring hit; quilt yes: miss
    ("Yes", "no"),            # has "yes", lacks "no": miss, pre-#35 not counted; quilt miss
    ("I cannot tell", "yes"),  # has "no" (in "cannot"), lacks "yes": miss, pre-#35 not counted; quilt yes: hit
    ("Unclear", "yes"),       # no yes/no: miss, pre-#35 counted as 0; quilt yes: hit
]
OPEN = [
    ("The squamous carcinoma", "squamous cell carcinoma"),  # tp 2 fp 0 fn 1: P 1, R 2/3, F1 0.8
    ("2 cells", "two"),                                     # ref -> "2": tp 1 fp 1 fn 0: P 1/2, R 1, F1 2/3
    ("", "lymphoma"),                                       # empty prediction: 0, 0, 0
]


def _aggregate(mode):
    rows = CLOSED + OPEN
    return compat.pathvqa_compat_scores([p for p, _ in rows], [r for _, r in rows],
                                        [True] * len(CLOSED) + [False] * len(OPEN), mode)


def test_llava_med_aggregates():
    out = _aggregate("llava-med")
    assert out["closed_accuracy"] == pytest.approx(2 / 5)  # after PR #35 every closed question counts
    assert out["open_recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert out["open_precision"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert out["open_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    # BLEU-1: item 1 has all 2 unigrams matched, BP = exp(1 - 3/2); item 2 has 1 of 2 matched, BP = 1
    assert out["open_bleu1"] == pytest.approx((math.exp(-0.5) + 0.5 + 0) / 3)
    # "exact match score": distinct reference words found / prediction tokens: 2/2, 1/2, 0
    assert out["open_exact_match"] == pytest.approx(0.5)
    assert (out["n_closed"], out["n_open"]) == (5, 3)


def test_llava_med_pre35_drops_wrong_yes_no_answers():
    out = _aggregate("llava-med-pre35")
    assert out["n_closed_counted"] == 3 and out["closed_accuracy"] == pytest.approx(2 / 3)
    assert out["open_recall"] == _aggregate("llava-med")["open_recall"]  # PR #35 changed closed only


def test_quilt_aggregates():
    out = _aggregate("quilt")
    assert out["closed_accuracy"] == pytest.approx(3 / 5)
    assert out["open_recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert out["open_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError, match="unknown compatibility mode"):
        compat.pathvqa_compat_scores(["x"], ["y"], [False], "vqa-v2")


def test_metric_module_modes_agree_with_compat():
    rows = CLOSED + OPEN
    preds, refs = [p for p, _ in rows], [r for _, r in rows]
    types = ["closed"] * len(CLOSED) + ["open"] * len(OPEN)
    for mode in ("llava-med", "llava-med-pre35", "quilt"):
        ours, upstream = pathvqa.compute(preds, refs, types, mode=mode), _aggregate(mode)
        for name in pathvqa.MODE_METRICS[mode]:
            assert ours[name] == pytest.approx(upstream[name]), (mode, name)
    # `normalized` (ours, version 1.0.0's rules) maps no number words: "2 cells" vs "two" recalls nothing
    normalized = pathvqa.compute(preds, refs, types, mode="normalized")
    assert normalized["open_recall"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert normalized["closed_accuracy"] == pytest.approx(2 / 5)


def test_pathvqa_task_records_unparsed_answers_consistently():
    items = [{"id": "c1", "prediction": "Normal", "reference": "no", "answer_type": "closed", "group": "i1"},
             {"id": "c2", "prediction": "Unclear", "reference": "yes", "answer_type": "closed", "group": "i1"},
             {"id": "c3", "prediction": "Yes", "reference": "no", "answer_type": "closed", "group": "i2"},
             {"id": "o1", "prediction": "2 cells", "reference": "two", "answer_type": "open", "group": "i2"}]
    result, records = score_items("pathvqa", items, n_resamples=20)
    assert result["modes"] == list(pathvqa.MODES) and result["parse_failures"] == 2
    first = records[0]  # "Normal": no yes/no word -> parsed null, yet a llava-med hit
    assert first["parsed"] is None and first["reason"] and first["correct"] is True
    assert first["scores"]["quilt"]["closed_hit"] is False and first["scores"]["llava-med"]["closed_hit"] is True
    assert records[2]["scores"]["llava-med-pre35"]["closed_hit"] is None  # not counted before PR #35
    assert result["metrics"]["llava-med-pre35"]["closed_accuracy"]["value"] == pytest.approx(1 / 2)
    assert result["metrics"]["llava-med"]["closed_accuracy"]["value"] == pytest.approx(1 / 3)
    assert result["metrics"]["llava-med"]["open_recall"]["value"] == 1.0
    bad = [{"id": "q9", "prediction": "maybe", "reference": "lymphoma", "answer_type": "closed"}]
    with pytest.raises(InputError, match="quilt") as exc:
        score_items("pathvqa", bad, ["quilt"], n_resamples=0)
    assert exc.value.record == "q9"


# --- SQuAD normalisation and token_f1 ----------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("The X-ray, an image.", "xray image"),   # punctuation deleted (not spaced), articles dropped
    ("Don't", "dont"),
    ("isn\u2019t", "isn\u2019t"),             # curly apostrophe is not in string.punctuation
    ("theory of a", "theory of"),            # whole words only
    ("  A  ", ""),
    (None, ""),
])
def test_squad_normalize(text, expected):
    assert compat.squad_normalize(text) == expected


def test_squad_f1_and_token_f1():
    # "section of colon" vs "colon section": 2 shared, P = 2/3, R = 1, F1 = 0.8
    assert squad.precision_recall_f1("a section of colon", "a colon section") == pytest.approx((2 / 3, 1.0, 0.8))
    assert squad.precision_recall_f1("", "") == (0.0, 0.0, 0.0)               # v1.1: no empty rule
    assert squad.precision_recall_f1("", "", empty="v2.0") == (1.0, 1.0, 1.0)  # v2.0: both empty agree
    assert squad.best_over_references("colon", ["liver", "the colon"]) == (1.0, 1.0, 1.0)
    # token_f1 2.0.0 normalises as SQuAD does: "X-ray" is one token "xray" (1.0.0 split it in two)
    assert token_f1.compute(["The X-ray"], ["xray"])["token_f1"] == 1.0
    assert token_f1.compute(["a section of colon"], ["a colon section"])["token_f1"] == pytest.approx(0.8)
    assert token_f1.item_scores("", "")["token_f1"] == 1.0


# --- PathMMU -----------------------------------------------------------------------------------

OPTIONS = ["A) Adenocarcinoma", "B) Squamous cell carcinoma", "C) Lymphoma", "D) Normal tissue"]


@pytest.mark.parametrize("answer,expected", [
    ("B", "B"),
    ("(b).", "B"),
    ("Answer: B", "B"),
    ("B, because the cells form keratin pearls", "B"),
    ("Looking at the keratin pearls, I would say B", "B"),
    ("(B)", "B"),
    ("(B) Squamous cell carcinoma", "B"),
    ("B. Squamous", "B"),
    ("The answer is (C)", "C"),
    ("The answer is B because option A lacks keratin", "B"),  # a stated answer beats a mentioned option
    ("Option C is correct", "C"),
    ("The most likely diagnosis is D.", "D"),
    ("Lymphoma", "C"),                                        # option text only
    ("This is squamous cell carcinoma, not adenocarcinoma", "B"),  # negated mention ignored
    ("A tumour of glands", None),                             # the article "A" is no letter
    ("I would say A or B", None),                             # hedge
    ("carcinoma", None),                                      # part of two options' texts, no whole one
    ("", None),
])
def test_parse_pathmmu_answer(answer, expected):
    assert parse_pathmmu_answer(answer, OPTIONS).value == expected


@pytest.mark.parametrize("stored,letter", [
    ("B", "B"), ("b", "B"), ("(B)", "B"), ("B) Squamous cell carcinoma", "B"), ("B. Squamous cell carcinoma", "B"),
    ("Lymphoma", "C"),
])
def test_read_reference(stored, letter):
    assert read_reference(stored, OPTIONS, record="PubMed/7") == letter


@pytest.mark.parametrize("stored,match", [
    ("E", "does not have"), ("B) Lymphoma", "text of option C"), ("Sarcoma", "cannot be mapped"), ("(", "cannot"),
    (None, "cannot be mapped"),
])
def test_read_reference_errors_name_the_record(stored, match):
    with pytest.raises(InputError, match=match) as exc:
        read_reference(stored, OPTIONS, record="PubMed/7")
    assert exc.value.record == "PubMed/7"


def test_pathmmu_upstream_prompt_formats():
    opts = ["A) Tumour (grade 2) cells", "B) Normal"]
    # upstream keeps option.split(')')[1]: the text stops at the second ")"
    assert upstream_option_text(opts[0]) == "Tumour (grade 2"
    # llava1.5.yaml after YAML folding: "{}\n{}\nAnswer with ..." with "(A) text\n" option lines
    assert pathmmu_prompt("What is shown?", opts, "pathmmu-llava1.5") == (
        "What is shown?\n(A) Tumour (grade 2\n(B) Normal\n\nAnswer with the option's letter from the given choices directly.")
    assert pathmmu_prompt("Q", opts, "pathmmu-instructblip") == (
        "Choose the correct option to the following question: Q Options: (A) Tumour (grade 2\n(B) Normal\n Answer:")
    assert pathmmu_prompt("Q", ["A) x", "B) y"], "ours") == (
        "Q\nA) x\nB) y\nAnswer with the option's letter from the given choices directly.")
    assert {"ours", "pathmmu-llava1.5", "pathmmu-qwenvl", "pathmmu-blip2"} <= set(list_prompt_formats())
    with pytest.raises(InputError, match="no '\\)'"):
        pathmmu_prompt("Q", ["x", "y"], "pathmmu-qwenvl", record="r1")
    with pytest.raises(InputError, match="unknown PathMMU prompt format"):
        pathmmu_prompt("Q", opts, "pathmmu-gpt")


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 100, 50)).save(path)


def test_pathmmu_reader_uses_reference_reader_and_prompt_format(tmp_path):
    items = [{"No": 1, "img": "1.png", "question": "Which?", "options": ["A) x", "B) y"], "answer": "B) y"},
             {"No": 2, "img": "1.png", "question": "What?", "options": ["A) u", "B) v"], "answer": "A. u"}]
    _png(tmp_path / "images" / "1.png")
    (tmp_path / "data.json").write_text(json.dumps({"PubMed": {"test": items}}))
    got = read_pathmmu(tmp_path, split="test", prompt_format="pathmmu-qwenvl")
    assert [it["reference"] for it in got] == ["B", "A"]
    assert got[0]["prompt"] == "Which?\n(A) x\n(B) y\n\nAnswer:"
    items[1]["answer"] = "C"
    (tmp_path / "data.json").write_text(json.dumps({"PubMed": {"test": items}}))
    with pytest.raises(InputError, match="option C") as exc:
        read_pathmmu(tmp_path, split="test")
    assert exc.value.record == "PubMed/2"


def test_pathmmu_scoring_reads_references_and_parses_phrasings():
    opts = ["A) x", "B) y", "C) z"]
    rows = [("B, because of y", "B) y"), ("I would say C", "(C)"), ("A or B", "A"), ("Answer: A", "A. x")]
    items = [{"id": str(i), "options": opts, "reference": ref, "prediction": p} for i, (p, ref) in enumerate(rows)]
    result, records = score_items("pathmmu", items, n_resamples=0)
    assert [r["correct"] for r in records] == [True, True, False, True]
    assert result["parse_failures"] == 1 and records[2]["parsed"] is None
    with pytest.raises(InputError, match="cannot be mapped") as exc:
        score_items("pathmmu", [{"id": "x9", "options": opts, "reference": "wrong answer", "prediction": "A"}], n_resamples=0)
    assert exc.value.record == "x9"


# --- captioning multi-reference ----------------------------------------------------------------


def test_captioning_warns_about_differing_predictions_of_one_image(caplog):
    items = [
        {"id": "a", "group": "img1", "reference": "polarity is lost. high grade.", "prediction": "high grade."},
        {"id": "b", "group": "img1", "reference": "crowding is severe. high grade.", "prediction": "low grade."},
        {"id": "c", "group": "img2", "reference": "normal.", "prediction": "normal."},
        {"id": "d", "group": "img2", "reference": "benign. normal.", "prediction": "normal."},
    ]
    with caplog.at_level(logging.WARNING):
        result, _ = score_items("captioning", items, n_resamples=0)
    assert result["extras"]["multi_reference_images_with_differing_predictions"] == 1
    assert result["extras"]["multi_reference_images_with_differing_predictions_examples"] == ["img1"]
    assert "1 of 2 images have rows with different predictions" in caplog.text


def test_runner_passes_the_pathmmu_prompt_format(tmp_path):
    from pathinsight_models.evaluation.runner import build_items
    from pathinsight_models.evaluation.tasks import get_task

    _png(tmp_path / "images" / "1.png")
    (tmp_path / "data.json").write_text(json.dumps(
        {"Atlas": {"test": [{"No": 3, "img": "1.png", "question": "Q?", "options": ["A) x", "B) y"], "answer": "(A)"}]}}))
    items, info = build_items(get_task("pathmmu"), pathmmu=tmp_path, pathmmu_prompt="pathmmu-llava1.5")
    assert items[0]["prompt"] == "Q?\n(A) x\n(B) y\n\nAnswer with the option's letter from the given choices directly."
    assert info["prompt_format"] == "pathmmu-llava1.5" and items[0]["reference"] == "A"


def test_metric_folders_load_offline_with_their_sibling_files(tmp_path, monkeypatch):
    import evaluate

    from pathinsight_models.metrics import metric_path

    for var in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    v = evaluate.load(metric_path("pathvqa"), cache_dir=str(tmp_path / "c"))  # copies llava_med.py, quilt.py
    preds, refs = [p for p, _ in CLOSED], [r for _, r in CLOSED]
    assert v.compute(predictions=preds, references=refs, mode="llava-med-pre35")["closed_accuracy"] == pytest.approx(2 / 3)
    assert v.compute(predictions=preds, references=refs, mode="quilt")["closed_accuracy"] == pytest.approx(3 / 5)
    t = evaluate.load(metric_path("token_f1"), cache_dir=str(tmp_path / "c"))  # copies squad.py
    assert t.compute(predictions=["The X-ray"], references=["xray"])["token_f1"] == 1.0
