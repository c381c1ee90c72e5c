"""OpenPath (Huang et al. 2023): tweets the user re-collected ("hydrated") from the released tweet ids.

Only tweet ids may be redistributed, so the builder reads a JSONL the user wrote after hydrating
them: one `{"tweet_id": "...", "text": "...", "image": "images/<file>.jpg"}` per line, `image`
relative to the JSONL's folder (a tweet with several images: one line per image). If the
released id list `dataframe_208K_rows.csv` lies beside it, every tweet is checked against it;
the recipes leave out tweets that are not listed (option `openpath_unlisted`).

The tweet text is cleaned here (pure `clean_tweet_text`); which tweets to drop is the recipes' call.
"""

from __future__ import annotations

import csv
import html
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError, RecordError
from ..jsonio import load_json
from .base import BuildContext, Source, SourceRecord, link_by_identical_files, register_source

ID_CSV = "dataframe_208K_rows.csv"

_RETWEET = re.compile(r"^\s*RT\s+@\w+:?\s*")
_URL = re.compile(r"(?:https?://|www\.)\S+|\bpic\.twitter\.com/\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w{1,15}\b:?")
_TRAILING_HASHTAGS = re.compile(r"(?:\s*#\w+[.!,;:]*)+\s*$")
_HASHTAG = re.compile(r"(?<![\w#])#(\w+)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)])")
_DANGLING_END = re.compile(r"(?:\s*(?:\bvia\b|[:;,\-–—|/(]))+\s*$", re.IGNORECASE)
_DANGLING_START = re.compile(r"^(?:\s*[:;,\-–—|/)])+\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# ---- pure helpers ----


def clean_tweet_text(text: str) -> str:
    """Tweet text -> caption: no URLs, @mentions, retweet prefix or trailing hashtag run.

    HTML entities are decoded, `#` is dropped from hashtags inside the text (`#melanoma` is part
    of the sentence), whitespace is collapsed to single spaces and separators left dangling at
    either end (`:`, `-`, `|`, "via") are removed.
    """
    text = html.unescape(text)
    text = _RETWEET.sub("", text)
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = " ".join(text.split())
    text = _TRAILING_HASHTAGS.sub("", text)
    text = _HASHTAG.sub(r"\1", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _DANGLING_END.sub("", text)
    text = _DANGLING_START.sub("", text)
    return " ".join(text.split())


def is_question_only(text: str) -> bool:
    """True if every sentence is a question ("What is your diagnosis?"): such a tweet describes nothing."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    return bool(sentences) and all(s.rstrip().endswith("?") for s in sentences)


def drop_reason(caption: str, min_words: int) -> str | None:
    """Why a cleaned tweet cannot be a caption: "empty", "too_short", "question_only", or None."""
    if not caption.strip():
        return "empty"
    if len(caption.split()) < min_words:
        return "too_short"
    if is_question_only(caption):
        return "question_only"
    return None


def normalise_tweet_id(value: object, *, allow_float_text: bool = False) -> str | None:
    """A tweet id as a decimal string, or None. Accepts ints and digit strings (and "123.0" in CSVs)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    value = value.strip()
    if re.fullmatch(r"\d+", value):
        return value
    if allow_float_text and re.fullmatch(r"\d+\.0*", value):
        return value.split(".", 1)[0]
    return None


def parse_hydrated_line(raw: bytes, file: Path, lineno: int) -> dict[str, Any]:
    """One JSONL line -> {tweet_id, text, image[, similarity]}; raises `RecordError` naming file and line."""
    where = f"{file.name}:{lineno}"
    fix = 'each line must be {"tweet_id": "<digits>", "text": "...", "image": "<path relative to the JSONL>"}'
    try:
        item = load_json(file, raw)
    except InputError as exc:
        raise RecordError(f"line is not valid JSON ({exc.reason})", file=file, record=where, fix=fix) from exc
    if not isinstance(item, dict):
        raise RecordError(f"line holds a JSON {type(item).__name__}, not an object", file=file, record=where, fix=fix)
    tweet_id = normalise_tweet_id(item.get("tweet_id"))
    if tweet_id is None:
        raise RecordError(f"'tweet_id' {item.get('tweet_id')!r} is not an integer id", file=file, record=where, fix=fix)
    where = f"{where} (tweet {tweet_id})"
    if not isinstance(item.get("text"), str):
        raise RecordError("'text' is missing or not a string", file=file, record=where, fix=fix)
    image = item.get("image")
    if not isinstance(image, str) or not image.strip():
        raise RecordError("'image' is missing or not a string", file=file, record=where, fix=fix)
    out = {"tweet_id": tweet_id, "text": item["text"], "image": image.strip()}
    if "similarity" in item:
        score = item["similarity"]
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise RecordError(f"'similarity' {score!r} is not a number", file=file, record=where,
                              fix="omit 'similarity' or give the image-text similarity as a number")
        out["similarity"] = float(score)
    return out


# ---- reader ----


@register_source
class OpenPath(Source):
    name = "openpath"
    license = "other (X/Twitter terms apply; tweet IDs from OpenPath)"
    description = (
        "OpenPath pathology tweets (tweet ids released by Huang et al. 2023), re-collected by the user; "
        "the X/Twitter terms of service apply to the text and images"
    )

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        if self.path.is_file():
            self.jsonl = [self.path]
            root = self.path.parent
        else:
            root = self.path
            self.jsonl = sorted(root.rglob("*.jsonl"))
        if not self.jsonl:
            raise InputError("no hydrated OpenPath .jsonl file found", file=self.path,
                             fix='hydrate the tweet ids and write one {"tweet_id", "text", "image"} per line '
                             "into a .jsonl file (see docs/sources_llava_med_openpath.md)")
        # Beside a given JSONL only; anywhere inside a given folder.
        csvs = [root / ID_CSV] if self.path.is_file() else sorted(root.rglob(ID_CSV), key=lambda p: (len(p.parts), str(p)))
        csvs = [c for c in csvs if c.is_file()]
        self.id_csv = csvs[0] if csvs else None
        self.stats: dict[str, int] = {}
        self._cache_records: list[SourceRecord] | None = None

    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self._cache_records = self._scan(ctx)
        yield from self._cache_records

    def _scan(self, ctx: BuildContext) -> list[SourceRecord]:
        listed = self._read_id_csv(ctx) if self.id_csv else None
        if listed is None:
            ctx.note(f"openpath: no {ID_CSV} given, so tweets were not checked against the OpenPath id list")
        stats: Counter[str] = Counter()
        seen: set[tuple[str, Path]] = set()
        per_tweet: Counter[str] = Counter()
        found: list[tuple[str, dict[str, Any], Path]] = []
        for file in self.jsonl:
            with open(file, "rb") as handle:
                for lineno, raw in enumerate(handle, 1):
                    if not raw.strip():
                        continue
                    try:
                        item = parse_hydrated_line(raw, file, lineno)
                        image = self._image_path(item, file, lineno)
                    except RecordError as err:
                        ctx.bad_record(err)
                        continue
                    if (item["tweet_id"], image) in seen:
                        stats["duplicates"] += 1
                        continue
                    seen.add((item["tweet_id"], image))
                    per_tweet[item["tweet_id"]] += 1
                    n = per_tweet[item["tweet_id"]]
                    found.append((item["tweet_id"] + ("" if n == 1 else f"-{n}"), item, image))
        groups = link_by_identical_files((item["tweet_id"], image) for _, item, image in found)
        records = []
        for record_id, item, image in found:
            row = listed.get(item["tweet_id"]) if listed is not None else None
            fields = {
                "tweet_id": item["tweet_id"], "text": item["text"], "caption": clean_tweet_text(item["text"]),
                "listed": None if listed is None else row is not None, "group": groups[item["tweet_id"]],
                "csv_source": row[0] if row else None, "hashtag": row[1] if row else None,
            }
            if "similarity" in item:
                fields["similarity"] = item["similarity"]
            stats["unlisted"] += fields["listed"] is False
            records.append(SourceRecord(self.name, record_id, "hydrated", ("file", str(image)), fields))
        stats["tweets"] = len(per_tweet)
        self.stats = {k: stats[k] for k in ("tweets", "duplicates", "unlisted")}
        if stats["duplicates"]:
            ctx.note(f"openpath: {stats['duplicates']} repeated line(s) (same tweet and image) ignored")
        if listed is not None and per_tweet and stats["unlisted"] == len(records):
            ctx.warn(f"openpath: none of the {len(per_tweet)} hydrated tweets is in {ID_CSV}; is it the right file?")
        return records

    @staticmethod
    def _image_path(item: dict[str, Any], file: Path, lineno: int) -> Path:
        where = f"{file.name}:{lineno} (tweet {item['tweet_id']})"
        rel = PurePosixPath(item["image"].replace("\\", "/"))
        if rel.is_absolute() or re.match(r"^[A-Za-z]:", item["image"]):
            raise RecordError(f"image path {item['image']!r} is absolute", file=file, record=where,
                              fix="write image paths relative to the JSONL's folder")
        path = file.parent / rel
        if not path.is_file():
            raise RecordError(f"image file {item['image']!r} is missing", file=file, record=where,
                              fix="download the tweet's image there, remove the line, or pass --on-error skip")
        return path

    def _read_id_csv(self, ctx: BuildContext) -> dict[str, tuple[str, str]]:
        """tweet id -> (source, hashtag) from the released id list (header optional)."""
        assert self.id_csv is not None
        out: dict[str, tuple[str, str]] = {}
        unreadable = 0
        with open(self.id_csv, newline="", encoding="utf-8", errors="replace") as handle:
            for rowno, row in enumerate(csv.reader(handle), 1):
                if not row:
                    continue
                if len(row) < 6:
                    if not out and not unreadable:
                        raise InputError(f"{ID_CSV} row {rowno} has {len(row)} columns, expected 6 "
                                         "(index, source, hashtag, weblink, tweet id, media id)",
                                         file=self.id_csv, fix="pass the original file from the OpenPath release")
                    unreadable += 1
                    continue
                # The tweet id is the second-to-last column (also when a re-saved file gained an index column).
                tweet_id = normalise_tweet_id(row[-2], allow_float_text=True)
                if tweet_id is None:
                    if rowno > 1 and row[-2].strip():  # empty ids are PathLAION rows; row 1 may be a header
                        unreadable += 1
                    continue
                out.setdefault(tweet_id, (row[-5].strip(), row[-4].strip()))
        if unreadable:
            ctx.note(f"openpath: {unreadable} row(s) of {ID_CSV} hold no readable tweet id (e.g. 1.2e+18 lost "
                     "digits) and cannot match")
        return out

    def input_files(self) -> list[Path]:
        """The JSONL, the id CSV and the images of the records read."""
        records = self._cache_records
        if records is None:
            records = self._scan(BuildContext(on_error="skip"))
        files = {*self.jsonl, *([self.id_csv] if self.id_csv else [])}
        files |= {Path(r.locator[1]) for r in records}
        return sorted(files)
