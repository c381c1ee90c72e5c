"""LLaVA-style instruction JSON shared by PathGen-Instruct, Quilt-Instruct and PathInstruct.

A file is a JSON list of `{"id": ..., "image": "<name>", "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}`. Quilt-LLaVA's own conversion notebook also
writes turns as `{"role": "User"|"GPT", "content": ...}`; both spellings are read. The first human turn
holds the one `<image>` token, before or after the question (the generators place it at random).

`InstructSource` is the reader base: it finds the JSON files and the image folder, validates every
dialogue, drops exact repeats, counts dialogues whose image is not downloaded (a counted skip, not an
error: users rarely hold every image), and records the group a split must keep together.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from tqdm.auto import tqdm

from ..errors import InputError, RecordError
from ..jsonio import load_json
from ..limits import is_valid_text
from .base import BuildContext, ScannedSource, SourceRecord

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_CONVERSATION_KEYS = ("conversations", "conversation")
_FIX = ('each record must be {"id": "...", "image": "<file name>", "conversations": [{"from": "human", '
        '"value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}')


@dataclass(frozen=True, slots=True)
class Instruct:
    """One validated instruction record."""

    id: str  # the record's own id (the image stem when it has none)
    image: str  # the image path as written in the record
    turns: tuple[tuple[str, str], ...]  # (user|assistant, text), image token removed


def strip_image_token(text: str) -> str:
    """Remove the one `<image>` token and the whitespace around it: `"<image>\\nQ"` and `"Q\\n<image>"` give `"Q"`."""
    before, token, after = text.partition(IMAGE_TOKEN)
    if not token:
        return text.strip()
    gap = before[len(before.rstrip()):] + after[: len(after) - len(after.lstrip())]
    joiner = "\n" if "\n" in gap else (" " if gap else "")
    return (before.rstrip() + joiner + after.lstrip()).strip()


def _turn(turn: object, k: int, file: Path, where: str) -> tuple[str, str]:
    """(role, raw text) of one turn in either spelling, in its place (turns alternate user, assistant)."""
    if isinstance(turn, dict):
        for speaker_key, text_key in (("from", "value"), ("role", "content")):
            if speaker_key in turn and isinstance(turn.get(text_key), str):
                speaker = turn[speaker_key]
                role = ROLES.get(speaker.strip().lower()) if isinstance(speaker, str) else None
                if role is None:
                    raise RecordError(f"turn {k} has unknown speaker {speaker!r} (expected human/gpt or User/GPT)",
                                      file=file, record=where, fix=_FIX)
                expected = "user" if k % 2 == 0 else "assistant"
                if role != expected:
                    raise RecordError(f"turn {k} is from the {role}; turns must alternate human, gpt, ...",
                                      file=file, record=where, fix=_FIX)
                return role, turn[text_key]
    raise RecordError(f"turn {k} is not an object with 'from'/'value' (or 'role'/'content') strings",
                      file=file, record=where, fix=_FIX)


def turn_text(text: str, k: int, file: Path, where: str, *, fix: str, image_optional: bool = False) -> str:
    """The text of turn `k` with its `<image>` token removed: valid Unicode, the one token (at most one when
    `image_optional`) in the first turn and none later, some text left."""
    if not is_valid_text(text):
        raise RecordError(f"turn {k} holds invalid Unicode (a lone surrogate)", file=file, record=where, fix=fix)
    tokens = text.count(IMAGE_TOKEN)
    if k == 0 and (tokens > 1 or (tokens == 0 and not image_optional)):
        expected = "at most one" if image_optional else "exactly one"
        raise RecordError(f"the first human turn holds {tokens} '<image>' tokens, expected {expected}",
                          file=file, record=where, fix="put '<image>' once before or after the first question")
    if k > 0 and tokens:
        raise RecordError(f"turn {k} holds an '<image>' token; only the first human turn may", file=file,
                          record=where, fix="each dialogue has one image, in its first turn")
    text = strip_image_token(text)
    if not text:
        raise RecordError(f"turn {k} has no text", file=file, record=where, fix=fix)
    return text


def parse_turns(raw: object, file: Path, where: str, *, fix: str = _FIX,
                read_turn: Callable[[object, int, Path, str], tuple[str, str]] = _turn,
                image_optional: bool = False) -> tuple[tuple[str, str], ...]:
    """Validated (role, text) turns: alternating user/assistant, one `<image>` in the first user turn.

    `read_turn` gives one turn's (role, raw text) in a dialect's spelling and checks its place;
    `image_optional` also accepts a first turn without the token (LLaVA-Med's cleaned dialogues).
    """
    if not isinstance(raw, list) or not raw:
        raise RecordError("record has no conversations (no non-empty 'conversations' list)", file=file,
                          record=where, fix=fix)
    turns: list[tuple[str, str]] = []
    for k, item in enumerate(raw):
        role, text = read_turn(item, k, file, where)
        turns.append((role, turn_text(text, k, file, where, fix=fix, image_optional=image_optional)))
    if turns[-1][0] != "assistant":
        raise RecordError("the dialogue ends with an unanswered human turn", file=file, record=where, fix=fix)
    return tuple(turns)


def parse_instruct(item: object, file: Path, index: int) -> Instruct:
    """Validate one instruction record; a `RecordError` names the file and record."""
    where = f"{file.name}[{index}]"
    if not isinstance(item, dict):
        raise RecordError(f"record is a JSON {type(item).__name__}, not an object", file=file, record=where, fix=_FIX)
    image = item.get("image")
    if isinstance(image, list) and len(image) == 1:  # a one-image `images`-style list
        image = image[0]
    if not isinstance(image, str) or not image.strip():
        raise RecordError("record has no 'image' string (one image per dialogue)", file=file, record=where, fix=_FIX)
    if not is_valid_text(image):
        raise RecordError("'image' holds invalid Unicode (a lone surrogate)", file=file, record=where, fix=_FIX)
    record_id = item.get("id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    if not isinstance(record_id, str) or not record_id.strip() or not is_valid_text(record_id):
        record_id = PurePosixPath(image.replace("\\", "/")).stem
    record_id = record_id.strip()
    where = f"{where} (id {record_id})"
    key = next((k for k in _CONVERSATION_KEYS if k in item), None)
    return Instruct(record_id, image.strip(), parse_turns(item.get(key) if key else None, file, where))


class InstructSource(ScannedSource):
    """Reader base for LLaVA-style instruction JSON plus an image folder.

    Subclasses set `name`, `license`, `description`, `image_dirs` (folders below DIR searched for each
    record's `image`, in order; DIR itself is searched last), may narrow `instruct_files`, and define
    `group_of` (the unit a split keeps together).
    """

    image_dirs: ClassVar[tuple[str, ...]] = ("images",)
    json_hint: ClassVar[str] = "the instruction JSON file(s)"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self.instruct = self.instruct_files()
        root = self.source_root
        self.image_roots = [root / d for d in self.image_dirs if (root / d).is_dir()] + [root]
        self.stats: dict[str, int] = {}

    # ---- layout ----
    def candidate_files(self) -> list[Path]:
        """JSON files directly in DIR (or DIR itself when it is a file), sorted."""
        if self.path.is_file():
            if self.path.suffix.lower() != ".json":
                raise InputError("not a JSON file", file=self.path, fix=f"pass the folder holding {self.json_hint}")
            return [self.path]
        return sorted(p for p in self.path.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith("."))

    def instruct_files(self) -> list[Path]:
        """The instruction files to read (default: every JSON file of `candidate_files`)."""
        files = self.candidate_files()
        if not files:
            raise InputError(f"no instruction JSON found for {self.name}", file=self.path,
                             fix=f"point --source {self.name}= at the folder holding {self.json_hint}")
        return files

    def group_of(self, item: Instruct) -> str:
        """The unit a split keeps together (default: the image)."""
        return PurePosixPath(item.image.replace("\\", "/")).as_posix()

    def extra_fields(self, item: Instruct) -> dict[str, Any]:
        """Reader-specific fields added to each record."""
        return {}

    def file_tag(self, file: Path) -> str:
        """The id namespace of a file's records."""
        return file.stem

    # ---- records ----
    def _scan(self, ctx: BuildContext) -> list[SourceRecord]:
        stats: Counter[str] = Counter()
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        occurrences: Counter[str] = Counter()
        out: list[SourceRecord] = []
        for file in self.instruct:
            data = load_json(file, limits=self.lim)
            if not isinstance(data, list):
                raise InputError(f"{file.name} holds a JSON {type(data).__name__}, expected a list of dialogues",
                                 file=file, fix=f"pass the original {self.json_hint}")
            tag = self.file_tag(file)
            for index, raw in enumerate(tqdm(data, desc=f"reading {file.name}", unit="dlg", leave=False)):
                stats["dialogues_read"] += 1
                try:
                    item = parse_instruct(raw, file, index)
                    if (item.image, item.turns) in seen:
                        stats["duplicates"] += 1
                        continue
                    seen.add((item.image, item.turns))
                    image = self.find_image(self.image_roots, item.image, file=file,
                                            record=f"{file.name}[{index}] (id {item.id})", what=f"image {item.image!r}")
                except RecordError as err:
                    ctx.bad_record(err)
                    continue
                if image is None:
                    stats["missing_images"] += 1
                    continue
                # One id may carry several dialogues (conversation, description, reasoning): number repeats.
                occurrences[f"{tag}/{item.id}"] += 1
                n = occurrences[f"{tag}/{item.id}"]
                record_id = f"{tag}/{item.id}" + ("" if n == 1 else f"-{n}")
                out.append(SourceRecord(self.name, record_id, tag, ("file", str(image)), {
                    "image": item.image, "turns": item.turns, "group": self.group_of(item), "file": file.name,
                    **self.extra_fields(item),
                }))
        self.stats = {k: stats[k] for k in ("dialogues_read", "missing_images", "duplicates")}
        if stats["missing_images"]:
            folders = [f"{r.relative_to(self.source_root).as_posix()}/" for r in self.image_roots[:-1]]
            ctx.note(f"{self.name}: {stats['missing_images']} dialogue(s) skipped because their image is not in "
                     f"{', '.join([*folders, 'the source folder'])}")
        if stats["duplicates"]:
            ctx.note(f"{self.name}: {stats['duplicates']} exact duplicate dialogue(s) (same image and turns) dropped")
        return out

    def metadata_files(self) -> list[Path]:
        """The instruction JSON files."""
        return list(self.instruct)
