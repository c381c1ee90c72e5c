"""PMC-VQA (Zhang et al.; Hugging Face `xmcmic/PMC-VQA`): multiple-choice questions about PubMed Central figures.

Native layout: DIR holds the metafiles `train.csv`, `test.csv`, `test_clean.csv` (version 1) and/or
`train_2.csv`, `test_2.csv` (version 2), and the figures unzipped from `images.zip` / `images_2.zip`
under `DIR/images/`, `DIR/images_2/` or `DIR/figures/` (or DIR). Columns: `Figure_path`, `Question`,
`Answer` (spelled `Anwser` in version 1), `Choice A`..`Choice D` (each written `"A:..."`),
`Answer_label` (`A`-`D`), and `Caption` where present. A question whose figure is absent is a counted
skip. PMC-VQA covers all of medicine; `pathology_match` is the rule that keeps the pathology part
(applied by the selection, see docs/instruction_sets.md).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError, RecordError
from ..limits import is_valid_text, open_regular
from .base import BuildContext, ScannedSource, SourceRecord, register_source

CSV_FILES = ("train.csv", "test.csv", "test_clean.csv", "train_2.csv", "test_2.csv")
IMAGE_DIRS = ("images", "images_2", "figures")
LETTERS = ("A", "B", "C", "D")
_PMC = re.compile(r"PMC\d+", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*\(?([A-Da-d])\s*[:.)]\s*")

# The pathology rule (our own; keyword-based): a question is pathology when its text (question, choices,
# answer and caption) names microscopy of tissue or cells and names no imaging modality.
HISTOLOGY_TERMS = re.compile(
    r"\b(histolog\w*|histopatholog\w*|patholog\w*|h\s*&\s*e|haematoxylin|hematoxylin|eosin\w*|"
    r"immunohistochem\w*|ihc|immunostain\w*|micrograph\w*|photomicrograph\w*|microscop\w*|"
    r"stain(?:ed|ing|s)?|cytolog\w*|biops(?:y|ies)|magnification|mitos[ie]s|mitotic|nuclei|nuclear atypia|"
    r"giemsa|pas stain|masson|trichrome|tissue sections?|specimens?)\b",
    re.IGNORECASE,
)
IMAGING_TERMS = re.compile(
    r"\b(ct|mri|mr|x-?rays?|radiograph\w*|ultrasound|ultrasonograph\w*|sonograph\w*|echocardiogra\w*|"
    r"angiogra\w*|pet|spect|scintigra\w*|mammogra\w*|tomograph\w*|fluoroscop\w*|doppler|"
    r"fundus|oct|endoscop\w*|colonoscop\w*|ecg|eeg|t1|t2|flair)\b",
    re.IGNORECASE,
)


def pathology_match(text: str) -> tuple[int, int]:
    """(histology term hits, imaging term hits) in `text`; the rule keeps `histology > 0 and imaging == 0`."""
    return len(HISTOLOGY_TERMS.findall(text)), len(IMAGING_TERMS.findall(text))


def is_pathology(fields: dict[str, Any]) -> bool:
    """The documented pathology rule over a record's question, choices, answer and caption."""
    text = " ".join([fields["question"], *fields["choices"], fields.get("caption") or ""])
    histology, imaging = pathology_match(text)
    return histology > 0 and imaging == 0


def strip_choice(text: str) -> str:
    """`"A:Diffuse uptake"` / `" B: Focal"` -> the choice text without its letter."""
    return _PREFIX.sub("", text, count=1).strip()


def article_of(figure: str) -> str:
    """The `PMC<digits>` article of a figure path (`PMC1064097_F1.jpg` -> `PMC1064097`); else its stem."""
    match = _PMC.search(figure)
    return match.group(0).upper() if match else PurePosixPath(figure.replace("\\", "/")).stem


@register_source
class PmcVqa(ScannedSource):
    """Reader of the PMC-VQA metafiles with their figures."""

    name = "pmc_vqa"
    license = "other (no licence on the PMC-VQA card; figures from PMC-OA articles under their own licences)"
    description = ("PMC-VQA multiple-choice questions about PubMed Central figures (pathology part by our keyword "
                   "rule); no dataset licence declared, many source articles are CC BY-NC: research use")

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        if not self.path.is_dir():
            raise InputError("pmc_vqa needs the folder holding train.csv/test.csv and the figures", file=self.path,
                             fix="pass --source pmc_vqa=DIR")
        self.csvs = [self.path / n for n in CSV_FILES if (self.path / n).is_file()]
        if not self.csvs:
            raise InputError(f"no PMC-VQA metafile ({', '.join(CSV_FILES)}) found", file=self.path,
                             fix="download the CSV files of xmcmic/PMC-VQA into this folder")
        self.image_roots = [self.path / d for d in IMAGE_DIRS if (self.path / d).is_dir()] + [self.path]
        self.stats: dict[str, int] = {}

    def _rows(self, file: Path) -> Iterator[tuple[int, dict[str, str]]]:
        raw = open_regular(file, error=InputError, limits=self.lim, root=self.source_root, what=file.name)
        previous = csv.field_size_limit(self.lim.max_csv_field_bytes)
        try:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=""))
            header = set(reader.fieldnames or ())
            needed = {"Figure_path", "Question", "Choice A", "Choice B", "Choice C", "Choice D"}
            if not needed <= header or not header & {"Answer", "Anwser", "Answer_label", "Anwser_label"}:
                raise InputError(f"{file.name} lacks the PMC-VQA columns {sorted(needed - header)} or an answer column",
                                 file=file, fix="pass the original metafile (Figure_path, Question, Answer, Choice A-D, "
                                 "Answer_label)")
            rowno = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise InputError(f"{file.name} line {reader.line_num} cannot be read ({exc})", file=file,
                                     record=f"line {reader.line_num}", fix="re-download the metafile") from None
                rowno += 1
                yield rowno, row
        finally:
            csv.field_size_limit(previous)
            raw.close()

    def _parse(self, row: dict[str, str], file: Path, where: str) -> dict[str, Any]:
        fix = "each row needs Figure_path, Question, four choices and Answer_label A-D (or an Answer equal to a choice)"

        def cell(*names: str) -> str:
            value = next((row[n] for n in names if row.get(n) not in (None, "")), "") or ""
            if not is_valid_text(value):
                raise RecordError(f"column {names[0]} holds invalid Unicode", file=file, record=where, fix=fix)
            return value.strip()

        figure, question = cell("Figure_path"), cell("Question")
        choices = [strip_choice(cell(f"Choice {letter}")) for letter in LETTERS]
        if not figure or not question or not all(choices):
            raise RecordError("row lacks a figure, a question or one of the four choices", file=file, record=where,
                              fix=fix)
        letter = cell("Answer_label", "Anwser_label").upper()
        answer = strip_choice(cell("Answer", "Anwser"))
        if letter not in LETTERS:
            matches = [LETTERS[k] for k, c in enumerate(choices) if c.casefold() == answer.casefold()]
            if len(matches) != 1:
                raise RecordError(f"answer label {letter!r} is not A-D and the answer matches {len(matches)} choices",
                                  file=file, record=where, fix=fix)
            letter = matches[0]
        return {"figure": figure, "question": question, "choices": tuple(choices), "answer_letter": letter,
                "answer": choices[LETTERS.index(letter)], "caption": cell("Caption") or None,
                "article": article_of(figure)}

    def _scan(self, ctx: BuildContext) -> list[SourceRecord]:
        stats: Counter[str] = Counter()
        out: list[SourceRecord] = []
        for file in self.csvs:
            subset = file.stem
            for rowno, row in self._rows(file):
                stats["questions_read"] += 1
                where = f"{file.name} row {rowno}"
                try:
                    fields = self._parse(row, file, where)
                    image = self.find_image(self.image_roots, fields["figure"], file=file, record=where,
                                            what=f"figure {fields['figure']!r}")
                except RecordError as err:
                    ctx.bad_record(err)
                    continue
                if image is None:
                    stats["missing_images"] += 1
                    continue
                out.append(SourceRecord(self.name, f"{subset}/{rowno:06d}", subset, ("file", str(image)),
                                        {**fields, "group": fields["article"]}))
        self.stats = dict(stats)
        if stats["missing_images"]:
            ctx.note(f"pmc_vqa: {stats['missing_images']} question(s) skipped because their figure is not in "
                     f"{', '.join(IMAGE_DIRS)} (or the source folder)")
        return out

    def metadata_files(self) -> list[Path]:
        """The metafiles (CSV) found."""
        return list(self.csvs)
