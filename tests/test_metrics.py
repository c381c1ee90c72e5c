"""Our metric modules equal the reference libraries on fixed cases, and load offline with evaluate."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from nltk.translate.bleu_score import corpus_bleu, sentence_bleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

from pathinsight_models.metrics import list_metrics, metric_path
from pathinsight_models.metrics.bleu1 import bleu1
from pathinsight_models.metrics.classification import classification
from pathinsight_models.metrics.rouge import rouge
from pathinsight_models.metrics.token_f1 import token_f1

PREDS = [
    "Nuclear pleomorphism is mild. Polarity is lost. High grade.",
    "the cells are crowded and the nucleoli are prominent",
    "normal",
    "",
    "Low grade urothelial carcinoma with rare mitosis, low grade.",
]
REFS = [
    "Nuclear pleomorphism is severe. Nuclear crowding is moderate. Polarity is lost. High grade.",
    "cells are crowded; nucleoli are prominent.",
    "Nuclear pleomorphism is absent. Normal.",
    "Mitosis is rare.",
    "Low grade.",
]


def _tok(texts):
    return [bleu1.tokenize(t) for t in texts]


def test_tokenizer_matches_rouge_score_default():
    from rouge_score import tokenize as rs_tokenize

    for text in PREDS + REFS + ["Ki-67: 30%, CD3+ cells (5.5 µm)"]:
        assert bleu1.tokenize(text) == rs_tokenize.tokenize(text, None)


def test_bleu1_equals_nltk_sentence_and_corpus():
    out = bleu1.compute(PREDS, REFS)
    expected_sentence = [
        sentence_bleu([r], p, weights=(1.0,)) if p else 0.0 for p, r in zip(_tok(PREDS), _tok(REFS), strict=True)
    ]
    assert out["bleu1"] == pytest.approx(np.mean(expected_sentence), abs=1e-12)
    assert 0 < out["bleu1"] < 1 and out["n"] == 5
    # corpus level equals NLTK when no prediction is empty (NLTK counts an empty one as one unigram)
    nonempty = [(p, r) for p, r in zip(PREDS, REFS, strict=True) if p]
    got = bleu1.compute([p for p, _ in nonempty], [r for _, r in nonempty])["corpus_bleu1"]
    assert got == pytest.approx(corpus_bleu([[bleu1.tokenize(r)] for _, r in nonempty],
                                            [bleu1.tokenize(p) for p, _ in nonempty], weights=(1.0,)))


def test_bleu1_equals_sacrebleu_on_our_tokens():
    hyps = [" ".join(t) for t in _tok(PREDS)]
    refs = [" ".join(t) for t in _tok(REFS)]
    corpus = BLEU(max_ngram_order=1, tokenize="none").corpus_score(hyps, [refs]).score / 100
    assert bleu1.compute(PREDS, REFS)["corpus_bleu1"] == pytest.approx(corpus, abs=1e-9)
    sent = BLEU(max_ngram_order=1, tokenize="none", smooth_method="none", effective_order=True)
    for h, r, p, ref in zip(hyps, refs, PREDS, REFS, strict=True):
        if h:  # sacrebleu sentence score of an empty hypothesis is 0 as well, but warns
            assert bleu1.sentence_bleu1(p, ref) == pytest.approx(sent.sentence_score(h, [r]).score / 100, abs=1e-9)


def test_bleu1_multi_reference_equals_nltk():
    refs = [["the cat sat on the mat", "a cat was on a mat"], ["there is a cat"]]
    preds = ["the cat was on the mat", "cat"]
    got = bleu1.compute(preds, refs)
    expected = np.mean([sentence_bleu([r.split() for r in rs], p.split(), weights=(1.0,))
                        for p, rs in zip(preds, refs, strict=True)])
    assert got["bleu1"] == pytest.approx(expected)
    assert got["corpus_bleu1"] == pytest.approx(
        corpus_bleu([[r.split() for r in rs] for rs in refs], [p.split() for p in preds], weights=(1.0,)))


def test_bleu1_stats_sum_to_corpus_value():
    stats = np.array([bleu1.item_stats(p, r) for p, r in zip(PREDS, REFS, strict=True)], dtype=float)
    assert bleu1.bleu1_from_stats(*stats.sum(axis=0)) == pytest.approx(bleu1.compute(PREDS, REFS)["corpus_bleu1"])
    assert bleu1.bleu1_from_stats(0, 5, 5, 5) == 0.0


def test_rouge_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    out = rouge.compute(PREDS, REFS)
    for kind in ("rouge1", "rougeL"):
        scores = [scorer.score(r, p)[kind] for p, r in zip(PREDS, REFS, strict=True)]
        assert out[kind] == pytest.approx(np.mean([s.fmeasure for s in scores]))
        assert out[f"{kind}_precision"] == pytest.approx(np.mean([s.precision for s in scores]))
        assert out[f"{kind}_recall"] == pytest.approx(np.mean([s.recall for s in scores]))
    # target first: swapping arguments swaps precision and recall
    assert out["rouge1_precision"] != pytest.approx(out["rouge1_recall"])


def test_rouge_multi_reference_uses_score_multi():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    refs = ["polarity is lost. high grade.", "nuclear crowding is severe. high grade."]
    pred = "nuclear crowding is severe"
    got = rouge.item_scores(pred, refs)
    assert got["rouge1"] == pytest.approx(scorer.score_multi(refs, pred)["rouge1"].fmeasure)
    assert got["rouge1"] > rouge.item_scores(pred, refs[0])["rouge1"]


def test_token_f1_definition():
    assert token_f1.item_scores("the the cat", "the cat sat")["token_f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert token_f1.item_scores("", "")["token_f1"] == 1.0
    assert token_f1.item_scores("x", "")["token_f1"] == 0.0
    assert token_f1.item_scores("dog", "cat")["token_f1"] == 0.0
    assert token_f1.item_scores("cat", ["dog", "cat"])["token_f1"] == 1.0


LABELS = ["Adipose", "Debris", "Mucus"]
Y_TRUE = ["Adipose", "Adipose", "Debris", "Debris", "Mucus", "Mucus", "Mucus", "Adipose"]
Y_PRED = ["Adipose", "Debris", "Debris", None, "Mucus", "Adipose", "garbage", "Adipose"]


def test_classification_equals_sklearn():
    out = classification.compute(Y_PRED, Y_TRUE, LABELS)
    p_sk = [p if p in LABELS else "unparsed" for p in Y_PRED]
    p, r, f, _ = precision_recall_fscore_support(Y_TRUE, p_sk, labels=LABELS, average="macro", zero_division=0)
    assert (out["macro_precision"], out["macro_recall"], out["macro_f1"]) == pytest.approx((p, r, f))
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(Y_TRUE, p_sk))
    assert out["balanced_accuracy"] == pytest.approx(out["macro_recall"])
    assert out["accuracy"] == pytest.approx(4 / 8)
    assert out["n_unparsed"] == 2
    assert out["confusion_labels"] == [*LABELS, "unparsed"]
    assert out["confusion_matrix"][2] == [1, 0, 1, 1]  # Mucus row: one right, one Adipose, one unparsed
    pc, rc, fc, sc = precision_recall_fscore_support(Y_TRUE, p_sk, labels=LABELS, average=None, zero_division=0)
    for i, label in enumerate(LABELS):
        assert out["per_class"][label]["f1"] == pytest.approx(fc[i])
        assert out["per_class"][label]["support"] == sc[i]


def test_confusion_fast_path_equals_sklearn_with_weights():
    rng = np.random.default_rng(3)
    y_true, y_pred = classification.encode(Y_PRED, Y_TRUE, LABELS)
    for _ in range(5):
        w = rng.integers(0, 4, size=len(Y_TRUE)).astype(float)
        if not w.any():
            continue
        fast = classification.scores_from_confusion(classification.confusion(y_true, y_pred, len(LABELS), w))
        keep = w > 0  # sklearn's `labels` = classes present in the weighted references
        ref = classification.compute([p for p, k in zip(Y_PRED, keep, strict=True) if k],
                                     [t for t, k in zip(Y_TRUE, keep, strict=True) if k], LABELS, w[keep])
        for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "balanced_accuracy"):
            assert fast[key] == pytest.approx(ref[key]), key


def test_classification_rejects_unknown_reference():
    with pytest.raises(ValueError, match="references not in labels"):
        classification.compute(["Adipose"], ["Fat"], LABELS)


@pytest.fixture
def guard_sockets(monkeypatch):
    """Fail any connection to a non-loopback address."""
    real = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            raise AssertionError(f"network access attempted: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def no_network(guard_sockets, monkeypatch):
    """No network, and the libraries' offline modes on."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_evaluate_load_local_path_needs_no_network_even_online(guard_sockets, monkeypatch, tmp_path):
    import evaluate

    for var in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    m = evaluate.load(metric_path("token_f1"), cache_dir=str(tmp_path))
    assert m.compute(predictions=["x y z"], references=["x y"])["token_f1"] == pytest.approx(0.8)


def test_evaluate_load_local_modules_offline(no_network, tmp_path, monkeypatch):
    import evaluate

    from pathinsight_models.evaluation.metrics import load

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"
    m = evaluate.load(metric_path("bleu1"), cache_dir=str(tmp_path / "c"))
    assert m.compute(predictions=PREDS, references=REFS)["bleu1"] == pytest.approx(bleu1.compute(PREDS, REFS)["bleu1"])
    r = load("rouge", cache_dir=str(tmp_path / "c"))
    assert r.compute(predictions=PREDS, references=REFS)["rougeL"] == pytest.approx(rouge.compute(PREDS, REFS)["rougeL"])
    multi = r.compute(predictions=["high grade"], references=[["low grade", "high grade"]])
    assert multi["rouge1"] == pytest.approx(1.0)
    c = load("classification", cache_dir=str(tmp_path / "c"))
    got = c.compute(predictions=[p or "" for p in Y_PRED], references=Y_TRUE, labels=LABELS)
    assert got["macro_f1"] == pytest.approx(classification.compute(Y_PRED, Y_TRUE, LABELS)["macro_f1"])
    v = load("pathvqa", cache_dir=str(tmp_path / "c"))
    assert v.compute(predictions=["normal tissue"], references=["no"], mode="llava-med")["closed_accuracy"] == 1.0
    t = load("token_f1", cache_dir=str(tmp_path / "c"))
    assert t.compute(predictions=["a b"], references=["a b"])["token_f1"] == 1.0
    assert set(list_metrics()) == {"bleu1", "rouge", "classification", "pathvqa", "token_f1"}


def test_hub_name_is_not_what_we_use(no_network):
    """`evaluate.load("rouge")` would need the Hub: here it fails instead of touching the network silently."""
    import evaluate

    with pytest.raises(Exception):  # noqa: B017 - any failure is fine; a download would trip `no_network`
        evaluate.load("rouge")
