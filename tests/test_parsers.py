"""Answer parsers: every CRC variant maps, garbage is unparsed, PathMMU never guesses."""

from __future__ import annotations

import pytest

from pathenhanceds.labels import CRC_CLASSES
from pathenhanceds.selection.prompts import CRC_QUERY
from pathinsight_models.evaluation.parsers import (
    CRC_SYNONYMS,
    parse_choice,
    parse_crc,
    parse_grade,
    parse_yes_no,
    split_options,
)


@pytest.mark.parametrize("code,name", list(CRC_CLASSES.items()))
def test_crc_full_name_code_and_spelling_variants(code, name):
    variants = [
        name, name.upper(), name.lower(), f"  {name}. ", f"'{name}'", name.replace(" ", "-"),
        name.replace("-", " "), name.replace(" ", "  "), code, code.lower(), f"{code}.",
        f"The category is {name}.", f"This pathological image belongs to '{name}'", f"Answer: {code}",
    ]
    for text in variants:
        assert parse_crc(text).value == name, text


@pytest.mark.parametrize("name,synonyms", list(CRC_SYNONYMS.items()))
def test_crc_every_synonym_maps(name, synonyms):
    for syn in synonyms:
        assert parse_crc(syn).value == name, syn
        assert parse_crc(f"This image shows {syn}.").value == name, syn


@pytest.mark.parametrize("text,expected", [
    ("cancer-associated stroma", "Cancer-Associated Stroma"),  # longest phrase wins over "cancer"
    ("Tumor-associated stroma", "Cancer-Associated Stroma"),
    ("normal colon mucosa", "Normal Colon Mucosa"),
    ("This is not adipose tissue; it is mucus.", "Mucus"),  # negated mention dropped
    ("tumour", "Colorectal Adenocarcinoma Epithelium"),
])
def test_crc_overlaps_and_negation(text, expected):
    assert parse_crc(text).value == expected


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   ", "empty"), ("asdf qwerty", "no class"), ("I cannot tell.", "no class"),
    ("Adipose or Debris", "ambiguous"), (CRC_QUERY, "ambiguous"), ("the str of it", "no class"),
])
def test_crc_garbage_is_unparsed_with_reason(text, reason):
    parsed = parse_crc(text)
    assert parsed.value is None and not parsed.ok
    assert reason in parsed.reason


def test_crc_lower_case_code_only_when_alone():
    assert parse_crc("str").value == "Cancer-Associated Stroma"
    assert parse_crc("the str of it").value is None  # a lower-case code inside text is just a word
    assert parse_crc("looks like STR").value == "Cancer-Associated Stroma"  # upper-case codes count anywhere


@pytest.mark.parametrize("text,expected", [
    ("Yes, this image contains cancerous cells.", "yes"), ("No, there are no cancerous cells in this image.", "no"),
    ("yes", "yes"), ("NO.", "no"), ("There is no tumor.", "no"), ("The cells are not cancerous.", "no"),
    ("This patch contains metastatic tumour cells.", "yes"), ("Benign lymph node tissue.", "no"),
    ("Malignant cells are present.", "yes"), ("Cancer cells are absent.", "no"),
])
def test_yes_no(text, expected):
    assert parse_yes_no(text).value == expected


@pytest.mark.parametrize("text", ["", "I am not sure what this shows", "Lymph node with germinal centres",
                                  "maybe yes, maybe no but not really"])
def test_yes_no_unparsed(text):
    assert parse_yes_no(text).value is None


@pytest.mark.parametrize("text,expected", [
    ("Nuclear pleomorphism is mild. Polarity is normal. Mitosis is rare. Low grade.", "low grade"),
    ("nuclear crowding is severe. High-grade.", "high grade"),
    ("Nucleoli are inconspicuous. Normal.", "normal"),
    ("The tumour is high grade, not low grade", "low grade"),  # the last stated grade counts
    ("Mitosis is absent. Insufficient information.", "insufficient information"),
])
def test_grade(text, expected):
    assert parse_grade(text).value == expected


@pytest.mark.parametrize("text", ["", "Polarity is normal.", "Nuclear crowding is insufficient information.",
                                  "pink tissue"])
def test_grade_unparsed(text):
    assert parse_grade(text).value is None


OPTIONS = ["A) Squamous cell carcinoma", "B) Adenocarcinoma", "C) Lymphoma", "D) Carcinoma"]


@pytest.mark.parametrize("text,expected", [
    ("B", "B"), ("b", "B"), ("(C)", "C"), ("C.", "C"), ("D) Carcinoma", "D"), ("Answer: A", "A"),
    ("The answer is (B).", "B"), ("The correct option is C", "C"), ("lymphoma", "C"),
    ("It looks like squamous cell carcinoma.", "A"),  # longest option text wins over "carcinoma"
    ("carcinoma", "D"),
])
def test_choice_parsed(text, expected):
    assert parse_choice(text, OPTIONS).value == expected


@pytest.mark.parametrize("text", ["", "I don't know", "A cell with a nucleus", "E", "(B) or (C)",
                                  "adenocarcinoma or lymphoma", "The answer is F"])
def test_choice_never_guesses(text):
    for _ in range(5):  # deterministic: no random fallback, ever
        assert parse_choice(text, OPTIONS).value is None


def test_split_options_variants():
    assert split_options(["A) x", "B) y"]) == [("A", "x"), ("B", "y")]
    assert split_options(["(A) x", "(B) y"]) == [("A", "x"), ("B", "y")]
    assert split_options(["x", "y"]) == [("A", "x"), ("B", "y")]
