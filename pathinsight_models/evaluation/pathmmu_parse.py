"""PathMMU answers and references: which option a free-text answer picks, which option a reference names.

Three things, all pure functions:

- :func:`parse_pathmmu_answer` reads the option letter a model's answer picks ("B", "(B)",
  "Answer: B", "B, because ...", "... I would say B", "the answer is (C)", or the text of exactly one
  option). It never guesses: no option or several → unparsed (PathMMU's own
  ``get_multi_choice_prediction`` picks a random option instead; we count the answer as wrong).
- :func:`read_reference` reads a reference stored as a letter, "(B)", "B) text", "B. text" or the
  option text itself; one that names no option is an :class:`InputError` naming the record
  (PathMMU's ``construct_prompt`` takes ``answer[0]``, so "(B)" would silently become "(").
- :data:`PROMPT_FORMATS`: our prompt and PathMMU's own (``eval/utils/data_utils.py``
  ``construct_prompt`` with the ``multi_choice_example_format`` of ``eval/configs/*.yaml``,
  PathMMU-Benchmark/PathMMU commit f1ca4d33d407185a0e306b6185ab2f269926207c).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pathenhanceds.errors import InputError
from pathenhanceds.registry import Registry

from .parsers import Parsed, find_phrases, split_options, words

PATHMMU_COMMIT = "f1ca4d33d407185a0e306b6185ab2f269926207c"

# --- answers -----------------------------------------------------------------------------------

_ANSWER_PREFIX = re.compile(
    r"^\s*(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:the\s+)?(?:(?:correct|right|best|final|most likely)\s+)?"
    r"(?:answer|option|choice)(?:\s+(?:is|would be|should be))?\s*[:\-]?\s*",
    re.I,
)
_LONE_LETTER = re.compile(r"^\W*([A-Za-z])\W*$")
# "B)", "(B)", "B.", "B:", "B," at the very start; "b)" too. Upper case otherwise, so the article in
# "A tumour ..." is not a letter.
_LEADING = re.compile(r"^\s*(?:\(([A-Za-z])\)|([A-Z])\s*[).:,](?=\s|$)|([a-z])\)(?=\s|$))")
_STATED_ANSWER = re.compile(
    r"\b(?i:answer|correct option|correct choice)\s*(?:(?i:is|would be|should be))?\s*[:\-]?\s*"
    r"(?:\(([A-Za-z])\)|([A-Z])\b)"
)
_SAID = re.compile(
    r"\b(?i:say|choose|chose|pick|select|go with|opt for)\s+(?:(?i:option|answer|choice)\s+)?"
    r"(?:\(([A-Za-z])\)|([A-Z])\b(?!['\u2019-]))"
)
_OPTION_WORD = re.compile(r"\b(?i:option|choice)\s+(?:\(([A-Za-z])\)|([A-Z])\b(?!['\u2019-]))")
_FINAL_IS = re.compile(r"\bis\s+\(?([A-Z])\)?\s*[.!]?\s*$")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_ALTERNATIVES = re.compile(r"(?<![\w'])\(?([A-Z])\)?\s*(?:or|and/or|/)\s*\(?([A-Z])\)?(?![\w'])")
_NEGATORS = frozenset({"not", "no", "non", "without", "nor"})


def _letters(pattern: re.Pattern[str], text: str) -> set[str]:
    found: set[str] = set()
    for m in pattern.finditer(text):
        found |= {g.upper() for g in m.groups() if g}
    return found


def _option_mentions(body: str, pairs: list[tuple[str, str]]) -> set[str]:
    """Letters whose option text occurs in `body` (word level, longest first, negated mentions dropped)."""
    table = sorted(((words(t), letter) for letter, t in pairs if words(t)), key=lambda p: -len(p[0]))
    return {letter for _, letter in find_phrases(words(body), table, negators=_NEGATORS)}


def parse_pathmmu_answer(text: str | None, options: Sequence[str]) -> Parsed:
    """The option letter an answer picks, or unparsed with the reason (never a random option).

    Tried in order, the first rule that names exactly one option letter wins and a rule naming
    several makes the answer ambiguous (unparsed); so does a hedge between letters ("A or B"):

    1. the whole answer is one letter, possibly after "Answer:" / "The answer is": "B", "(b).";
    2. a leading letter: "B) ...", "(B) ...", "B. ...", "B, because ...";
    3. a stated answer: "the answer is B", "Answer: (C)", "correct option: D";
    4. a choice verb: "I would say B", "I'd choose option C", "go with (A)";
    5. "option B" / "choice B" anywhere;
    6. a final "... is B.";
    7. letters in parentheses anywhere: "(C)";
    8. the answer is, or contains, the text of exactly one option ("Adenocarcinoma"), a negated
       mention ("not adenocarcinoma") not counting; longer option texts win over the ones they contain.
    """
    pairs = split_options(options)
    letters = {letter for letter, _ in pairs}
    body = (text or "").strip()
    if not body:
        return Parsed(None, "empty answer")
    stripped = _ANSWER_PREFIX.sub("", body, count=1)
    for candidate in (body, stripped):
        m = _LONE_LETTER.match(candidate)
        if m and m.group(1).upper() in letters:
            return Parsed(m.group(1).upper())
    hedged = _letters(_ALTERNATIVES, body) & letters
    if len(hedged) > 1:  # "A or B", "(A)/(C)"
        return Parsed(None, "several options named: " + ", ".join(sorted(hedged)))
    rules: list[Callable[[], set[str]]] = [
        lambda: _letters(_LEADING, body) | _letters(_LEADING, stripped),
        lambda: _letters(_STATED_ANSWER, body),
        lambda: _letters(_SAID, body),
        lambda: _letters(_OPTION_WORD, body),
        lambda: _letters(_FINAL_IS, body),
        lambda: _letters(_PAREN_LETTER, body),
    ]
    for rule in rules:
        named = rule() & letters
        if len(named) == 1:
            return Parsed(named.pop())
        if named:
            return Parsed(None, "several options named: " + ", ".join(sorted(named)))
    exact = [letter for letter, t in pairs if words(t) and words(t) == words(body)]
    if len(exact) == 1:
        return Parsed(exact[0])
    named = _option_mentions(body, pairs)
    if len(named) == 1:
        return Parsed(named.pop())
    if named:
        return Parsed(None, "several options named: " + ", ".join(sorted(named)))
    return Parsed(None, "no option named")


# --- references --------------------------------------------------------------------------------

_REF_LETTER = re.compile(r"^\s*(?:\(([A-Za-z])\)|([A-Za-z])[).:]?)\s*$")
_REF_LETTER_TEXT = re.compile(r"^\s*(?:\(([A-Za-z])\)|([A-Za-z])[).:])\s+(\S.*)$", re.S)


def read_reference(answer: object, options: Sequence[str], *, record: object = None, file: object = None) -> str:
    """The option letter a stored reference names: "B", "(B)", "B) text", "B. text" or an option's text.

    A letter that is not an option, a "B) text" whose text is another option's text, or text that
    is no option is an :class:`InputError` naming the record (never a silent zero).
    """
    pairs = split_options(options)
    by_letter = dict(pairs)
    raw = "" if answer is None else str(answer)
    fix = 'store the answer as the option letter ("B"), "(B)", "B) <option text>" or the option text'
    m = _REF_LETTER.match(raw) or _REF_LETTER_TEXT.match(raw)
    if m:
        letter = (m.group(1) or m.group(2)).upper()
        if letter not in by_letter:
            raise InputError(f"PathMMU reference {raw!r} names option {letter}, which the item does not have "
                             f"(options {', '.join(by_letter)})", file=file, record=record, fix=fix)
        text = m.group(3) if m.re is _REF_LETTER_TEXT else None
        if text is not None and words(text) != words(by_letter[letter]):
            others = [other for other, t in pairs if other != letter and words(t) == words(text)]
            if others:
                raise InputError(f"PathMMU reference {raw!r} gives letter {letter} with the text of option {others[0]}",
                                 file=file, record=record, fix=fix)
        return letter
    matches = [letter for letter, t in pairs if words(t) and words(t) == words(raw)]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"PathMMU reference {raw!r} cannot be mapped to one of the options "
                     f"({'; '.join(f'{k}) {v}' for k, v in pairs)})", file=file, record=record, fix=fix)


# --- prompts -----------------------------------------------------------------------------------

OUR_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def upstream_option_text(option: str, *, record: object = None) -> str:
    """PathMMU ``construct_prompt``'s option text: ``option.split(')')[1].strip()``.

    Quirk kept: the text ends at the option's second ")", so "A) Tumour (grade 2) cells" shows as
    "Tumour (grade 2". An option without ")" made upstream skip the item; here it is an InputError.
    """
    parts = option.split(")")
    if len(parts) < 2:
        raise InputError(f"PathMMU option {option!r} has no ')' (PathMMU's prompt code needs 'A) text')",
                         record=record, fix="use --pathmmu-prompt ours, or store options as 'A) text'")
    return parts[1].strip()


def _our_prompt(question: str, options: Sequence[str], record: object = None) -> str:
    lines = [f"{letter}) {text}" for letter, text in split_options(options)]
    return "\n".join([question.strip(), *lines, OUR_INSTRUCTION])


def _upstream(template: str) -> Callable[[str, Sequence[str], object], str]:
    def build(question: str, options: Sequence[str], record: object = None) -> str:
        # options are lettered A, B, C... by position, whatever letters the data carries (as upstream)
        example = "".join(f"({chr(ord('A') + i)}) {upstream_option_text(o, record=record)}\n"
                          for i, o in enumerate(options))
        return template.format(question, example)
    return build


PROMPT_FORMATS: Registry[Callable[[str, Sequence[str], object], str]] = Registry(
    "PathMMU prompt format", fix="choose one of: {names}")
PROMPT_FORMATS.register("ours", _our_prompt)
# multi_choice_example_format of eval/configs/<model>.yaml after YAML folding (a blank line in a
# quoted scalar is one newline, a single line break one space); {} = question, then "(A) text\n" lines.
PROMPT_FORMATS.register("pathmmu-llava1.5", _upstream(
    "{}\n{}\nAnswer with the option's letter from the given choices directly."))
PROMPT_FORMATS.register("pathmmu-qwenvl", _upstream("{}\n{}\nAnswer:"))
PROMPT_FORMATS.register("pathmmu-blip2", _upstream("Question: {}\nOptions: {}\nAnswer:"))
PROMPT_FORMATS.register("pathmmu-instructblip", _upstream(
    "Choose the correct option to the following question: {} Options: {} Answer:"))


def list_prompt_formats() -> list[str]:
    """Names of the PathMMU prompt formats."""
    return PROMPT_FORMATS.names()


def pathmmu_prompt(question: str, options: Sequence[str], style: str = "ours", *, record: object = None) -> str:
    """The prompt text of one PathMMU item in a named format (``ours`` or PathMMU's ``pathmmu-*``)."""
    return PROMPT_FORMATS.get(style)(question, options, record)


__all__ = [
    "OUR_INSTRUCTION", "PATHMMU_COMMIT", "PROMPT_FORMATS", "list_prompt_formats", "parse_pathmmu_answer",
    "pathmmu_prompt", "read_reference", "upstream_option_text",
]
