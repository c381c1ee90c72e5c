"""Answer parsers: free text -> a class, yes/no, a bladder grade or an option letter.

A parser never guesses: text it cannot map returns ``Parsed(None, reason)``, which the task scores
as wrong and counts as a parse failure. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from pathenhanceds.labels import BLADDER_GRADES, CRC_CLASSES, CRC_SYNONYMS

CRC_LABELS: tuple[str, ...] = tuple(CRC_CLASSES.values())
GRADES: tuple[str, ...] = tuple(BLADDER_GRADES.values())


@dataclass(frozen=True)
class Parsed:
    """A parsed answer: `value` (None when unparsed) and why parsing failed."""

    value: str | None
    reason: str | None = None  # why parsing failed (None when it succeeded)

    @property
    def ok(self) -> bool:
        """True when the answer was parsed."""
        return self.value is not None


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def words(text: str | None) -> str:
    """Lower-case words separated by single spaces (hyphens, quotes and punctuation become spaces)."""
    return " ".join(_NON_ALNUM.sub(" ", (text or "").lower()).split())


# --- CRC ---------------------------------------------------------------------------------------

# Class-naming phrases (`labels.CRC_SYNONYMS`): longer phrases win over the phrases they contain.
_CRC_CODE = re.compile(r"\b(" + "|".join(CRC_CLASSES) + r")\b")
_NEGATORS = ("not", "no", "non", "without")


def _phrase_table(synonyms: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    table = [(words(phrase), label) for label, phrases in synonyms.items() for phrase in (label, *phrases)]
    return sorted(set(table), key=lambda pair: -len(pair[0]))


_CRC_TABLE = _phrase_table(CRC_SYNONYMS)


def find_phrases(text: str, table: list[tuple[str, str]], negators: Collection[str] = _NEGATORS) -> list[tuple[int, str]]:
    """Non-overlapping (position, label) matches in `words` text, in `table` order (put longer phrases
    first), a phrase after one of `negators` dropped."""
    padded = f" {text} "
    taken = [False] * len(padded)
    found: list[tuple[int, str]] = []
    for phrase, label in table:
        start = 0
        while (pos := padded.find(f" {phrase} ", start)) >= 0:
            start = pos + 1
            span = range(pos + 1, pos + 1 + len(phrase))
            if any(taken[i] for i in span):
                continue
            for i in span:
                taken[i] = True
            before = padded[:pos].split()
            if before and before[-1] in negators:
                continue
            found.append((pos, label))
    return sorted(found)


def parse_crc(text: str | None) -> Parsed:
    """Map an answer to one of the 9 CRC classes (full name, code, case/spacing variant or synonym).

    More than one class named (e.g. the options echoed back) is ambiguous, hence unparsed.
    """
    if not (text or "").strip():
        return Parsed(None, "empty answer")
    norm = words(text)
    labels = {label for _, label in find_phrases(norm, _CRC_TABLE)}
    labels |= {CRC_CLASSES[code] for code in _CRC_CODE.findall(text or "")}  # upper-case codes anywhere
    if norm.upper() in CRC_CLASSES:  # a bare code in any case ("tum")
        labels.add(CRC_CLASSES[norm.upper()])
    if len(labels) == 1:
        return Parsed(labels.pop())
    if not labels:
        return Parsed(None, "no class named")
    return Parsed(None, "ambiguous: " + ", ".join(sorted(labels)))


# --- any label set (the generic `classification` task) -------------------------------------------


def parse_label(text: str | None, labels: Sequence[str]) -> Parsed:
    """Map an answer to one of `labels` (a dataset's own class names), never guessing.

    In order: the answer is a label exactly (surrounding spaces ignored); it equals one label up to
    case, punctuation and spacing; it names exactly one label as whole words (longer names win over
    names they contain, a name after "not"/"no"/"non"/"without" does not count, as for CRC). None or
    several labels named -> unparsed.
    """
    body = (text or "").strip()
    if not body:
        return Parsed(None, "empty answer")
    if body in labels:
        return Parsed(body)
    norm = words(body)
    same = [label for label in labels if words(label) == norm]
    if len(same) == 1:
        return Parsed(same[0])
    if len(same) > 1:
        return Parsed(None, "ambiguous: " + ", ".join(sorted(same)))
    table = sorted({(words(label), label) for label in labels if words(label)}, key=lambda pair: -len(pair[0]))
    named = {label for _, label in find_phrases(norm, table)}
    if len(named) == 1:
        return Parsed(named.pop())
    if not named:
        return Parsed(None, "no class named")
    return Parsed(None, "ambiguous: " + ", ".join(sorted(named)))


# --- yes / no ----------------------------------------------------------------------------------

_CANCER = r"(cancer\w*|malignan\w*|tumou?r\w*|metasta\w*|carcinoma\w*|neoplas\w*)"
_NEGATED_CANCER = re.compile(rf"\b(no|not|without|absence of|absent|free of|negative for|lack of)\b(\s+\w+){{0,4}}\s+{_CANCER}")
_CANCER_ABSENT = re.compile(rf"\b{_CANCER}(\s+\w+){{0,3}}\s+(absent|not present|not seen|not identified)\b")
_NEGATIVE_WORDS = re.compile(r"\b(benign|normal|negative|healthy)\b")
_POSITIVE = re.compile(rf"\b({_CANCER}|positive)\b")


def parse_yes_no(text: str | None) -> Parsed:
    """yes/no from an answer: the first word, else a lone yes/no word, else cancer statements.

    "No ... cancer" (a negated cancer term), "benign", "normal" or "negative" read as no; an
    un-negated cancer term or "positive" as yes; anything else (or both kinds) is unparsed.
    """
    norm = words(text)
    if not norm:
        return Parsed(None, "empty answer")
    tokens = norm.split()
    if tokens[0] in ("yes", "no"):
        return Parsed(tokens[0])
    has_yes, has_no = "yes" in tokens, "no" in tokens
    if has_yes != has_no:
        return Parsed("yes" if has_yes else "no")
    if has_yes and has_no:
        return Parsed(None, "both yes and no")
    negative = bool(_NEGATED_CANCER.search(norm) or _CANCER_ABSENT.search(norm) or _NEGATIVE_WORDS.search(norm))
    positive = bool(_POSITIVE.search(_CANCER_ABSENT.sub(" ", _NEGATED_CANCER.sub(" ", norm))))
    if negative != positive:
        return Parsed("no" if negative else "yes")
    return Parsed(None, "contradictory answer" if negative else "no yes/no answer")


# --- bladder grade -----------------------------------------------------------------------------

_GRADE_TERMS = re.compile(r"\b(high|low)\s*grade\b")
_SENTENCES = re.compile(r"[.;\n]+")
_FEATURES = ("pleomorphism", "crowding", "polarity", "mitos", "mitot", "nucleol", "nuclear", "nuclei")


def parse_grade(text: str | None) -> Parsed:
    """The grade a bladder report concludes with: "normal", "low grade", "high grade" or "insufficient information".

    The reports end with a conclusion sentence. "high/low grade" is taken wherever it appears last;
    otherwise "normal"/"benign" or "insufficient information" count only in the final sentence and
    only if it names no feature (pleomorphism, crowding, polarity, mitosis, nucleoli), because feature
    sentences use those words too ("polarity is normal", "Insufficient information").
    """
    raw = (text or "").lower().replace("-", " ")
    if not raw.strip():
        return Parsed(None, "empty answer")
    matches = _GRADE_TERMS.findall(raw)
    if matches:
        return Parsed(f"{matches[-1]} grade")
    sentences = [s for s in (words(part) for part in _SENTENCES.split(raw)) if s]
    last = f" {sentences[-1]} " if sentences else ""
    if any(f" {feature}" in last for feature in _FEATURES):  # a feature sentence, not a conclusion
        return Parsed(None, "no grade stated")
    if " insufficient information " in last:
        return Parsed("insufficient information")
    if " normal " in last or " benign " in last:
        return Parsed("normal")
    return Parsed(None, "no grade stated")


# --- multiple choice ---------------------------------------------------------------------------

_OPTION = re.compile(r"^\s*\(?([A-Za-z])\s*[).:]\s*(.*)$", re.S)


def split_options(options: Sequence[str]) -> list[tuple[str, str]]:
    """["A) text", ...] -> [("A", "text"), ...]; options without a letter get A, B, C... by position."""
    parsed = [_OPTION.match(opt or "") for opt in options]
    if options and all(parsed):
        pairs = [(m.group(1).upper(), m.group(2).strip()) for m in parsed if m]
        if len({letter for letter, _ in pairs}) == len(pairs):
            return pairs
    return [(chr(ord("A") + i), (opt or "").strip()) for i, opt in enumerate(options)]


_LONE_LETTER = re.compile(r"^\W*([A-Za-z])\W*$")
_LEADING_LETTER = re.compile(r"^\s*(?:\(([A-Za-z])\)|([A-Z])\s*[).:](?:\s|$))")
_STATED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|would be|:)?\s*:?\s*\(?([A-Z])\b\)?")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*", re.I)


def parse_choice(text: str | None, options: Sequence[str]) -> Parsed:
    """The option letter an answer picks; unparsed (never a random letter) when none or several fit.

    Tried in order: a lone letter ("B", "(b)."), a leading "B)"/"(B)"/"B.", a stated letter ("the answer
    is (C)", "Option C"), letters in parentheses, then the text of exactly one option.
    """
    pairs = split_options(options)
    letters = {letter for letter, _ in pairs}
    body = (text or "").strip()
    if not body:
        return Parsed(None, "empty answer")
    stripped = _ANSWER_PREFIX.sub("", body)
    for candidate in (body, stripped):  # the whole answer is one letter: "B", "(b).", "Answer: C"
        m = _LONE_LETTER.match(candidate)
        if m and m.group(1).upper() in letters:
            return Parsed(m.group(1).upper())
    named_letters: set[str] = set()
    for candidate in (body, stripped):
        m = _LEADING_LETTER.match(candidate)
        if m:
            named_letters.add(next(g for g in m.groups() if g).upper())
    for pattern in (_STATED, _PAREN_LETTER):
        named_letters |= set(pattern.findall(body))
    named_letters &= letters
    if len(named_letters) == 1:
        return Parsed(named_letters.pop())
    if named_letters:
        return Parsed(None, "several options named: " + ", ".join(sorted(named_letters)))
    table = sorted(((words(t), letter) for letter, t in pairs if words(t)), key=lambda p: -len(p[0]))
    named = {letter for _, letter in find_phrases(words(body), table)}
    if len(named) == 1:
        return Parsed(named.pop())
    if named:
        return Parsed(None, "several options named: " + ", ".join(sorted(named)))
    return Parsed(None, "no option named")


PARSERS = {"crc": parse_crc, "yes_no": parse_yes_no, "grade": parse_grade}

__all__ = [
    "CRC_LABELS", "CRC_SYNONYMS", "GRADES", "PARSERS", "Parsed", "parse_choice", "parse_crc", "parse_grade",
    "parse_yes_no", "split_options", "words",
]
