"""microsoft/LLaVA-Med's PathVQA scoring, reimplemented item for item (mode ``llava-med``).

Provenance: https://github.com/microsoft/LLaVA-Med at commit b9a98a736d2ef05bcf5ff345be6403fb3a664eaf
("fix closed accuracy calculation (#35)", 2023-12-11):

- ``llava/eval/run_eval.py`` (``evaluate``): both texts are lower-cased and passed through
  ``normalize_word``; closed questions (``answer_type == "CLOSED"``) use the substring rule; open
  questions (``"OPEN"``) get ``calculate_f1score``, ``calculate_exactmatch`` and NLTK
  ``sentence_bleu`` with weights (1, 0, 0, 0) on the whitespace tokens.
- ``llava/eval/eval_metrics/glossary.py`` (``normalize_word`` and its tables).
- ``llava/eval/eval_metrics/evaluate_metrics.py`` (``calculate_f1score``, ``calculate_exactmatch``)
  and ``utils.py`` (``split_sentence``: lower-case, whitespace tokens, counted).

This is our own code: the definitions are reproduced, including their quirks, and every quirk is
named below and tested in ``tests/test_eval_compat.py``. Only the standard library and NLTK are
imported: the file sits beside ``pathvqa.py`` so the metric folder stays self-contained
(``evaluate.load`` copies sibling modules). ``pathinsight_models.evaluation.compat`` re-exports it.

Quirks reproduced on purpose (they change published numbers):

1. Punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is handled one character at a time:
   the character is *deleted* when the original text has it next to a space (``"x -y"``,
   ``"(x"`` after a space) or when the text contains digit,digit anywhere (``"1,5"``: then every
   punctuation character is deleted); otherwise it becomes a space. ``:``, ``'``, ``.`` and curly
   quotes are not in the list and survive this step.
2. Periods not followed by a digit are removed, but ``re.UNICODE`` (== 32) is passed to ``re.sub``
   as its *count*, so at most 32 periods go per call; later periods stay.
3. Words "none", "zero", "one" ... "ten" become digits; articles a/an/the are dropped (after the
   number map, on whitespace tokens).
4. The contractions table maps apostrophe-less spellings to apostrophe spellings ("isnt" ->
   "isn't") and never expands; one entry goes the other way ("somebody'd" -> "somebodyd"), a few
   keys are capitalised ("Im", "Ive") and can never match lower-case tokens.
5. The open metrics normalise a second time (``run_eval`` normalises, then ``calculate_f1score``
   normalises its arguments again), so a text with more than 32 stray periods loses up to 64 of
   them for F1/recall/precision, but only 32 for the closed rule and BLEU.
6. ``calculate_f1score``: tp adds the *prediction* count of every word found in both texts, fp
   the prediction count of words only in the prediction, fn the reference count of words only in
   the reference; precision = tp/(tp+fp), recall = tp/(tp+fn) (a prediction repeating a reference
   word raises recall); all three are 0 when either side has no tokens or tp is 0.
7. Closed (after PR #35): a hit iff the prediction contains "yes" or "no" as a *substring* and
   contains the reference as a substring ("normal", "not", "know" contain "no"); every closed
   question is in the denominator. Before PR #35 a prediction containing "yes"/"no" but not the
   reference appended nothing, i.e. it was dropped from the denominator (``llava-med-pre35``).
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

COMMIT = "b9a98a736d2ef05bcf5ff345be6403fb3a664eaf"
REPOSITORY = "microsoft/LLaVA-Med"

# glossary.py `punct`, in upstream's order (the order matters only for which rule each one meets).
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
# glossary.py `manual_map`
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# glossary.py `contractions`, written here as replacement <- spellings it replaces. Capitalised
# spellings are kept because upstream has them, although lower-cased text never reaches them.
_CONTRACTION_SOURCES: dict[str, tuple[str, ...]] = {
    "ain't": ("aint",), "aren't": ("arent",), "can't": ("cant",), "could've": ("couldve",),
    "couldn't": ("couldnt",), "couldn't've": ("couldn'tve", "couldnt've"), "didn't": ("didnt",),
    "doesn't": ("doesnt",), "don't": ("dont",), "hadn't": ("hadnt",), "hadn't've": ("hadnt've", "hadn'tve"),
    "hasn't": ("hasnt",), "haven't": ("havent",), "he'd": ("hed",), "he'd've": ("hed've", "he'dve"),
    "he's": ("hes",), "how'd": ("howd",), "how'll": ("howll",), "how's": ("hows",),
    "I'd've": ("Id've", "I'dve"), "I'm": ("Im",), "I've": ("Ive",), "isn't": ("isnt",), "it'd": ("itd",),
    "it'd've": ("itd've", "it'dve"), "it'll": ("itll",), "let's": ("let's",), "ma'am": ("maam",),
    "mightn't": ("mightnt",), "mightn't've": ("mightnt've", "mightn'tve"), "might've": ("mightve",),
    "mustn't": ("mustnt",), "must've": ("mustve",), "needn't": ("neednt",), "not've": ("notve",),
    "o'clock": ("oclock",), "oughtn't": ("oughtnt",), "'ow's'at": ("ow's'at", "'ows'at", "'ow'sat"),
    "shan't": ("shant",), "she'd've": ("shed've", "she'dve"), "she's": ("she's",),
    "should've": ("shouldve",), "shouldn't": ("shouldnt",), "shouldn't've": ("shouldnt've", "shouldn'tve"),
    "somebodyd": ("somebody'd",),  # upstream's one entry that removes an apostrophe
    "somebody'd've": ("somebodyd've", "somebody'dve"), "somebody'll": ("somebodyll",),
    "somebody's": ("somebodys",), "someone'd": ("someoned",), "someone'd've": ("someoned've", "someone'dve"),
    "someone'll": ("someonell",), "someone's": ("someones",), "something'd": ("somethingd",),
    "something'd've": ("somethingd've", "something'dve"), "something'll": ("somethingll",),
    "that's": ("thats",), "there'd": ("thered",), "there'd've": ("thered've", "there'dve"),
    "there're": ("therere",), "there's": ("theres",), "they'd": ("theyd",),
    "they'd've": ("theyd've", "they'dve"), "they'll": ("theyll",), "they're": ("theyre",),
    "they've": ("theyve",), "'twas": ("twas",), "wasn't": ("wasnt",), "we'd've": ("wed've", "we'dve"),
    "we've": ("weve",), "weren't": ("werent",), "what'll": ("whatll",), "what're": ("whatre",),
    "what's": ("whats",), "what've": ("whatve",), "when's": ("whens",), "where'd": ("whered",),
    "where's": ("wheres",), "where've": ("whereve",), "who'd": ("whod",), "who'd've": ("whod've", "who'dve"),
    "who'll": ("wholl",), "who's": ("whos",), "who've": ("whove",), "why'll": ("whyll",),
    "why're": ("whyre",), "why's": ("whys",), "won't": ("wont",), "would've": ("wouldve",),
    "wouldn't": ("wouldnt",), "wouldn't've": ("wouldnt've", "wouldn'tve"), "y'all": ("yall",),
    "y'all'll": ("yall'll", "y'allll"), "y'all'd've": ("yall'd've", "y'alld've", "y'all'dve"),
    "you'd": ("youd",), "you'd've": ("youd've", "you'dve"), "you'll": ("youll",), "you're": ("youre",),
    "you've": ("youve",),
}
CONTRACTIONS: dict[str, str] = {src: target for target, srcs in _CONTRACTION_SOURCES.items() for src in srcs}

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# Upstream's pattern starts with "(?!<=\d)", a mistyped look-behind: as a look-ahead at a "." it
# always succeeds, so the effective rule is "a period not followed by a digit".
_STRAY_PERIOD = re.compile(r"\.(?!\d)")
# `re.UNICODE` passed positionally as `count` by upstream: its value is the substitution limit.
PERIOD_LIMIT = int(re.UNICODE)


def normalize_word(text: str) -> str:
    """glossary.py ``normalize_word``: the normalised answer (tokens joined by single spaces)."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for ch in PUNCTUATION:
        # the test looks at the *input*, the edit at the running result (as upstream does)
        touches_space = f"{ch} " in text or f" {ch}" in text
        out = out.replace(ch, "" if (touches_space or delete_all) else " ")
    out = _STRAY_PERIOD.sub("", out, count=PERIOD_LIMIT)
    kept = []
    for word in out.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            kept.append(word)
    kept = [CONTRACTIONS.get(word, word) for word in kept]
    return " ".join(kept).replace(",", "")


def tokens(text: str) -> Counter[str]:
    """utils.py ``split_sentence(text, 1)``: lower-cased whitespace tokens with their counts."""
    return Counter(text.lower().split())


def precision_recall_f1(prediction: str, reference: str) -> tuple[float, float, float]:
    """evaluate_metrics.py ``calculate_f1score`` as (precision, recall, f1); normalises its arguments.

    (Upstream returns the same three values in the order f1, precision, recall.)
    """
    pred, ref = tokens(normalize_word(prediction)), tokens(normalize_word(reference))
    if not pred or not ref:
        return 0.0, 0.0, 0.0
    tp = sum(n for word, n in pred.items() if word in ref)  # prediction counts, not min counts
    fp = sum(n for word, n in pred.items() if word not in ref)
    fn = sum(n for word, n in ref.items() if word not in pred)
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return precision, recall, 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, reference: str) -> float:
    """evaluate_metrics.py ``calculate_exactmatch`` (upstream's "exact match score").

    Distinct reference words found in the prediction / prediction tokens (0 for an empty
    prediction); not an exact match despite its name. Normalises its arguments.
    """
    pred, ref = tokens(normalize_word(prediction)), tokens(normalize_word(reference))
    total = sum(pred.values())
    return sum(1 for word in ref if word in pred) / total if total else 0.0


def bleu1(prediction: str, reference: str) -> float:
    """NLTK ``sentence_bleu([ref.split()], pred.split(), weights=(1, 0, 0, 0))`` on normalised texts.

    Upstream passes its once-normalised texts; NLTK returns 0 when no unigram matches (so for an
    empty side) and warns about zero higher-order counts, which upstream silences too.
    """
    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sentence_bleu([reference.lower().split()], prediction.lower().split(), weights=(1, 0, 0, 0)))


def closed_hit(prediction: str, reference: str) -> bool:
    """run_eval.py closed rule on normalised texts: "yes"/"no" substring and reference substring."""
    return ("yes" in prediction or "no" in prediction) and reference in prediction


def closed_counted_pre35(prediction: str, reference: str) -> bool:
    """Whether run_eval.py *before* PR #35 appended a score for this closed item.

    It appended 1 for a hit and 0 for a prediction without "yes"/"no", but nothing for a
    prediction that contains "yes"/"no" and not the reference.
    """
    return closed_hit(prediction, reference) or not ("yes" in prediction or "no" in prediction)


@dataclass(frozen=True)
class ItemScore:
    """One question scored as run_eval.py scores it (closed fields or open fields are None)."""

    closed: bool
    prediction: str  # normalised once, as run_eval.py holds it
    reference: str
    hit: bool | None = None  # closed, post-PR-#35 rule
    counted_pre35: bool | None = None  # closed, whether the pre-PR-#35 script counted the item
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    exact_match: float | None = None
    bleu1: float | None = None


def score_item(prediction: str | None, reference: str | None, closed: bool) -> ItemScore:
    """One item: lower-case and normalise both texts, then the closed rule or the open metrics."""
    pred = normalize_word((prediction or "").lower())
    ref = normalize_word((reference or "").lower())
    if closed:
        return ItemScore(True, pred, ref, hit=closed_hit(pred, ref), counted_pre35=closed_counted_pre35(pred, ref))
    precision, recall, f1 = precision_recall_f1(pred, ref)  # normalises again (quirk 5)
    return ItemScore(False, pred, ref, f1=f1, precision=precision, recall=recall,
                     exact_match=exact_match_score(pred, ref), bleu1=bleu1(pred, ref))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def aggregate(items: Iterable[ItemScore], *, pre35: bool = False) -> dict[str, float | int]:
    """run_eval.py's aggregates as fractions (upstream prints them x100).

    ``closed_accuracy`` = hits / closed questions (after PR #35) or hits / counted questions
    (``pre35=True``); open metrics are means over open questions. Where upstream divides by zero
    (no open questions) or prints 0.0 (no closed ones) the value here is NaN.
    """
    items = list(items)
    closed = [it for it in items if it.closed]
    opened = [it for it in items if not it.closed]
    counted = [it for it in closed if it.counted_pre35] if pre35 else closed
    return {
        "closed_accuracy": _mean([float(bool(it.hit)) for it in counted]),
        "open_recall": _mean([it.recall for it in opened if it.recall is not None]),
        "open_precision": _mean([it.precision for it in opened if it.precision is not None]),
        "open_f1": _mean([it.f1 for it in opened if it.f1 is not None]),
        "open_bleu1": _mean([it.bleu1 for it in opened if it.bleu1 is not None]),
        "open_exact_match": _mean([it.exact_match for it in opened if it.exact_match is not None]),
        "n_closed": len(closed),
        "n_closed_counted": len(counted),
        "n_open": len(opened),
    }


__all__ = [
    "ARTICLES", "COMMIT", "CONTRACTIONS", "ItemScore", "NUMBER_WORDS", "PERIOD_LIMIT", "PUNCTUATION",
    "REPOSITORY", "aggregate", "bleu1", "closed_counted_pre35", "closed_hit", "exact_match_score",
    "normalize_word", "precision_recall_f1", "score_item", "tokens",
]
