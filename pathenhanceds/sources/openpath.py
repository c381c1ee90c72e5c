"""OpenPath (Huang et al. 2023): tweets the user re-collected ("hydrated") from the released tweet ids.

Only tweet ids may be redistributed, so the builder reads a JSONL the user wrote after hydrating
them: one `{"tweet_id": "...", "text": "...", "image": "images/<file>.jpg"}` per line, `image`
relative to the JSONL's folder (a tweet with several images: one line per image). If the
released id list `dataframe_208K_rows.csv` lies beside it, every tweet is checked against it;
the selections leave out tweets that are not listed (option `openpath_unlisted`).

The tweet text is cleaned here (pure `clean_tweet_text`); which tweets to drop is the selections' call.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError, RecordError
from ..jsonio import load_json
from ..limits import check_regular, inside, is_valid_text, iter_lines, open_regular
from .base import BuildContext, ScannedSource, SourceRecord, link_by_identical_files, register_source

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
    if not (is_valid_text(item["text"]) and is_valid_text(image)):
        raise RecordError("'text' or 'image' holds invalid Unicode (a lone surrogate)", file=file, record=where,
                          fix="re-collect the tweet, remove the line, or pass --on-error skip")
    out = {"tweet_id": tweet_id, "text": item["text"], "image": image.strip()}
    if "similarity" in item:
        score = item["similarity"]
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise RecordError(f"'similarity' {score!r} is not a number", file=file, record=where,
                              fix="omit 'similarity' or give the image-text similarity as a number")
        try:
            score = float(score)
        except OverflowError:  # an integer too large for a float
            score = math.inf
        if math.isfinite(score):  # NaN/Infinity (written by some tools) count as "not scored"
            out["similarity"] = score
    return out


# ---- reader ----


@register_source
class OpenPath(ScannedSource):
    """Reader of the OpenPath tweets (hydrated JSONL + images), checked against the published id list."""
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
            self.jsonl = self.walk(suffixes={".jsonl"})
        if not self.jsonl:
            raise InputError("no hydrated OpenPath .jsonl file found", file=self.path,
                             fix='hydrate the tweet ids and write one {"tweet_id", "text", "image"} per line '
                             "into a .jsonl file (see docs/sources_llava_med_openpath.md)")
        # Beside a given JSONL only; anywhere inside a given folder.
        csvs = [root / ID_CSV] if self.path.is_file() else sorted(self.walk(name=ID_CSV),
                                                                  key=lambda p: (len(p.parts), str(p)))
        csvs = [c for c in csvs if os.path.lexists(c)]  # a FIFO or folder of that name is reported, not ignored
        self.id_csv = csvs[0] if csvs else None
        self.stats: dict[str, int] = {}

    def _scan(self, ctx: BuildContext) -> list[SourceRecord]:
        listed = self._read_id_csv(ctx) if self.id_csv else None
        if listed is None:
            ctx.note(f"openpath: no {ID_CSV} given, so tweets were not checked against the OpenPath id list")
        stats: Counter[str] = Counter()
        seen: set[tuple[str, Path]] = set()
        per_tweet: Counter[str] = Counter()
        found: list[tuple[str, dict[str, Any], Path]] = []
        max_line = self.lim.max_jsonl_line_bytes
        for file in self.jsonl:
            with open_regular(file, error=InputError, limits=self.lim, root=self.source_root,
                              what="JSONL file") as handle:
                for lineno, raw in iter_lines(handle, max_line):
                    try:
                        if raw is None:
                            raise RecordError(f"line is longer than {max_line} bytes (max_jsonl_line_bytes)",
                                              file=file, record=f"{file.name}:{lineno}",
                                              fix="one hydrated tweet per line; remove the line or pass --on-error skip")
                        if not raw.strip():
                            continue
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

    def _image_path(self, item: dict[str, Any], file: Path, lineno: int) -> Path:
        """The line's image: relative to the JSONL's folder, inside the source folder, a regular file."""
        where = f"{file.name}:{lineno} (tweet {item['tweet_id']})"
        path = inside(self.source_root, file.parent, item["image"], file=file, record=where, limits=self.lim)
        if not os.path.lexists(path):
            raise RecordError(f"image file {item['image']!r} is missing", file=file, record=where,
                              fix="download the tweet's image there, remove the line, or pass --on-error skip")
        check_regular(path, file=file, record=where, limits=self.lim, root=self.source_root,
                      what=f"image {item['image']!r}")
        return path

    def _read_id_csv(self, ctx: BuildContext) -> dict[str, tuple[str, str]]:
        """tweet id -> (source, hashtag) from the released id list (header optional)."""
        assert self.id_csv is not None
        raw = open_regular(self.id_csv, error=InputError, limits=self.lim, root=self.source_root, what=ID_CSV)
        previous_limit = csv.field_size_limit(self.lim.max_csv_field_bytes)
        rows = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=""))
        try:
            return self._parse_id_rows(self._csv_rows(rows), ctx)
        finally:
            csv.field_size_limit(previous_limit)
            raw.close()

    def _csv_rows(self, rows: Any) -> Iterator[tuple[int, list[str]]]:
        """(row number, row); a field over `max_csv_field_bytes` or a malformed line is an `InputError`."""
        rowno = 0
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"{ID_CSV} line {rows.line_num} cannot be read ({exc}; max_csv_field_bytes is "
                                 f"{self.lim.max_csv_field_bytes})", file=self.id_csv, record=f"line {rows.line_num}",
                                 fix="pass the original file from the OpenPath release") from None
            rowno += 1
            yield rowno, row

    def _parse_id_rows(self, rows: Iterator[tuple[int, list[str]]], ctx: BuildContext) -> dict[str, tuple[str, str]]:
        assert self.id_csv is not None
        out: dict[str, tuple[str, str]] = {}
        unreadable = 0
        for rowno, row in rows:
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

    def metadata_files(self) -> list[Path]:
        """The JSONL files and the id CSV, if found."""
        return [*self.jsonl, *([self.id_csv] if self.id_csv else [])]
