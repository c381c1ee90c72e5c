"""LLaVA-Med instruct dialogues (Microsoft): `llava_med_instruct_*.json` + `images/<pair_id>.jpg`.

Any subset of the three instruct files may be present. Histology is read from each record's
`domain`, or, when a file carries no `domain`, by joining `id == pair_id` with
`llava_med_instruct_fig_captions.json`. Many PMC image links are dead, so a missing image is a
counted skip, never an error.

Ids are namespaced by file (`10k/<pair_id>`, `60k/<pair_id>`, `60k_inline_mention/<pair_id>`):
the 10k and 60k files hold *different* GPT-generated dialogues about the same figures, and the
paper kept both. A dialogue whose pair_id and turns equal an earlier one is an exact duplicate
and is dropped (counted in a note).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..errors import InputError, RecordError
from ..jsonio import load_json
from .base import BuildContext, Source, SourceRecord, link_by_identical_files, register_source

INSTRUCT_FILES = (
    "llava_med_instruct_10k.json",
    "llava_med_instruct_60k.json",
    "llava_med_instruct_60k_inline_mention.json",
)
FIG_CAPTIONS = "llava_med_instruct_fig_captions.json"
DOMAINS = ("chest_xray", "mri", "ct_scan", "histology", "gross")
ROLES = {"human": "user", "gpt": "assistant"}
IMAGE_TOKEN = "<image>"
_CONVERSATION_KEYS = ("conversations", "conversatons")  # some derived files misspell the key


@dataclass(frozen=True, slots=True)
class Dialogue:
    """One validated instruct record."""

    pair_id: str
    image: str | None  # the record's own `image` field, if any
    turns: tuple[tuple[str, str], ...]  # (user|assistant, text), image token removed
    domains: tuple[str, ...] | None  # true domains; None when the record has no `domain`


# ---- pure helpers ----


def file_tag(path: Path) -> str:
    """`llava_med_instruct_10k.json` -> `10k` (the id namespace of a file's records)."""
    return path.stem.removeprefix("llava_med_instruct_")


def pmid_of(pair_id: str) -> str:
    """The PubMed id of a figure: the part of `pair_id` before the first `_`."""
    return pair_id.split("_", 1)[0]


def strip_image_token(text: str) -> str:
    """Remove the `<image>` token and the whitespace around it (before or after the question).

    `"<image>\\nWhat?"` and `"What?\\n<image>"` both give `"What?"`; a token between two pieces of
    text is replaced by the newline (or space) that surrounded it.
    """
    before, token, after = text.partition(IMAGE_TOKEN)
    if not token:
        return text.strip()
    gap = before[len(before.rstrip()):] + after[: len(after) - len(after.lstrip())]
    joiner = "\n" if "\n" in gap else (" " if gap else "")
    return (before.rstrip() + joiner + after.lstrip()).strip()


def true_domains(value: object) -> tuple[str, ...] | None:
    """`{"histology": true, "mri": false, ...}` -> `("histology",)`; None if not such a mapping."""
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        return None
    return tuple(sorted(str(k) for k, v in value.items() if v))


def parse_dialogue(item: object, file: Path, index: int) -> Dialogue:
    """Validate one instruct record; raises `RecordError` naming the file and record."""
    where = f"{file.name}[{index}]"
    fix = ('each record must be {"id": "<pmid>_<fig>", "image": "...jpg", "conversations": '
           '[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}')
    if not isinstance(item, dict):
        raise RecordError(f"record is a JSON {type(item).__name__}, not an object", file=file, record=where, fix=fix)
    pair_id = item.get("id")
    image = item.get("image")
    if not isinstance(pair_id, str) or not pair_id.strip():
        if not isinstance(image, str) or not image.strip():
            raise RecordError("record has neither an 'id' nor an 'image' string", file=file, record=where, fix=fix)
        pair_id = PurePosixPath(image).stem
    pair_id = pair_id.strip()
    where = f"{where} (id {pair_id})"
    if image is not None and not isinstance(image, str):
        raise RecordError(f"'image' is a {type(image).__name__}, not a string", file=file, record=where, fix=fix)
    key = next((k for k in _CONVERSATION_KEYS if k in item), None)
    turns_raw = item.get(key) if key else None
    if not isinstance(turns_raw, list) or not turns_raw:
        raise RecordError("record has no conversations (no non-empty 'conversations' list)", file=file,
                          record=where, fix=fix)
    turns: list[tuple[str, str]] = []
    for k, turn in enumerate(turns_raw):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RecordError(f"turn {k} is not an object with a string 'value'", file=file, record=where, fix=fix)
        speaker = turn.get("from")
        role = ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise RecordError(f"turn {k} has unknown role {speaker!r} (expected 'human' or 'gpt')",
                              file=file, record=where, fix=fix)
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise RecordError(f"turn {k} is from {speaker!r}; turns must alternate human, gpt, ...",
                              file=file, record=where, fix=fix)
        text = turn["value"]
        tokens = text.count(IMAGE_TOKEN)
        if k == 0 and tokens != 1:
            raise RecordError(f"the first human turn holds {tokens} '<image>' tokens, expected exactly one",
                              file=file, record=where, fix="put '<image>' once before or after the first question")
        if k > 0 and tokens:
            raise RecordError(f"turn {k} holds an '<image>' token; only the first human turn may",
                              file=file, record=where, fix="each dialogue has one image, in its first turn")
        text = strip_image_token(text)
        if not text:
            raise RecordError(f"turn {k} has no text", file=file, record=where, fix=fix)
        turns.append((role, text))
    if turns[-1][0] != "assistant":
        raise RecordError("the dialogue ends with an unanswered human turn", file=file, record=where, fix=fix)
    domains = None
    if "domain" in item:
        domains = true_domains(item["domain"])
        if domains is None:
            raise RecordError("'domain' is not an object of booleans", file=file, record=where,
                              fix=f"'domain' maps {', '.join(DOMAINS)} to true/false")
    return Dialogue(pair_id, image, tuple(turns), domains)


def fig_caption_domains(data: object, file: Path, ctx: BuildContext) -> dict[str, tuple[str, ...]]:
    """pair_id -> true domains from the fig-captions file.

    Accepted layouts: a list of entries, an object of lists keyed by domain, or an object keyed
    by pair_id. An entry without its own `domain` takes the domain it is listed under.
    """
    entries: list[tuple[str | None, str | None, object]] = []  # (group key, key, entry)
    if isinstance(data, list):
        entries = [(None, None, e) for e in data]
    elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        entries = [(group, None, e) for group, items in data.items() for e in items]
    elif isinstance(data, dict):
        entries = [(None, key, e) for key, e in data.items()]
    else:
        raise InputError(f"{FIG_CAPTIONS} holds a JSON {type(data).__name__}, expected a list of figures",
                         file=file, fix=f"pass the original {FIG_CAPTIONS}")
    out: dict[str, tuple[str, ...]] = {}
    for index, (group, key, entry) in enumerate(entries):
        fix = 'each figure must be {"pair_id": "...", "domain": {"histology": true, ...}, ...}'
        pair_id = entry.get("pair_id", key) if isinstance(entry, dict) else None
        if not isinstance(pair_id, str):
            ctx.bad_record(RecordError("figure entry has no 'pair_id' string", file=file, record=f"[{index}]",
                                       fix=fix))
            continue
        domains = true_domains(entry.get("domain")) if "domain" in entry else None
        if domains is None and group in DOMAINS:
            domains = (group,)
        if domains is None:
            ctx.bad_record(RecordError("figure entry has no usable 'domain'", file=file, record=pair_id, fix=fix))
            continue
        out[pair_id] = tuple(sorted(set(out.get(pair_id, ())) | set(domains)))
    return out


# ---- reader ----


@register_source
class LlavaMed(Source):
    name = "llava_med"
    license = "CC-BY-NC-4.0"
    description = (
        "LLaVA-Med instruct dialogues about PubMed Central figures (pathology subset); dialogues CC BY-NC 4.0, "
        "images under their PMC-OA articles' own licences"
    )

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self.instruct = self._find_instruct()
        root = self.path if self.path.is_dir() else self.path.parent
        self.fig_captions = self._find(root, FIG_CAPTIONS)
        candidates = [root / "images"]
        for file in self.instruct:
            candidates += [file.parent / "images", file.parent.parent / "images"]
        self.images = next((c for c in candidates if c.is_dir()), None)
        if self.images is None:
            raise InputError("no images/ folder found next to the instruct files", file=root,
                             fix="download the figures into images/<pair_id>.jpg (LLaVA-Med's download script)")
        self.stats: dict[str, int] = {}
        self._cache_records: list[SourceRecord] | None = None

    @staticmethod
    def _find(root: Path, name: str) -> Path | None:
        hits = sorted(root.rglob(name), key=lambda p: (len(p.parts), str(p)))
        if len(hits) > 1:
            raise InputError(f"{name} found more than once: {', '.join(str(h) for h in hits)}", file=root,
                             fix="keep one copy of each file")
        return hits[0] if hits else None

    def _find_instruct(self) -> list[Path]:
        if self.path.is_file():
            if self.path.suffix != ".json":
                raise InputError("not a JSON file", file=self.path, fix="pass the folder holding llava_med_instruct_*.json")
            return [self.path]
        found = [hit for name in INSTRUCT_FILES if (hit := self._find(self.path, name))]
        if not found:
            raise InputError(f"no LLaVA-Med instruct file ({', '.join(INSTRUCT_FILES)}) found", file=self.path,
                             fix="point --source llava_med= at the folder holding the downloaded instruct JSON files")
        return found

    def _image_path(self, dialogue: Dialogue, file: Path, index: int) -> Path | None:
        assert self.images is not None
        names = [dialogue.image] if dialogue.image else []
        names.append(f"{dialogue.pair_id}.jpg")
        for name in names:
            rel = PurePosixPath(name.replace("\\", "/"))
            if rel.is_absolute() or ".." in rel.parts:
                raise RecordError(f"image path {name!r} points outside the images folder", file=file,
                                  record=f"{file.name}[{index}] (id {dialogue.pair_id})",
                                  fix="'image' must be a file name inside images/")
            candidate = self.images / rel
            if candidate.is_file():
                return candidate
        return None

    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self._cache_records = self._scan(ctx)
        yield from self._cache_records

    def _scan(self, ctx: BuildContext) -> list[SourceRecord]:
        fig_domains: dict[str, tuple[str, ...]] | None = None
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        occurrences: Counter[tuple[str, str]] = Counter()
        stats: Counter[str] = Counter()
        found: list[tuple[str, str, Path, Dialogue, tuple[str, ...] | None, Path]] = []
        for file in self.instruct:
            data = load_json(file)
            if not isinstance(data, list):
                raise InputError(f"instruct file holds a JSON {type(data).__name__}, expected a list of dialogues",
                                 file=file, fix="pass the original llava_med_instruct_*.json")
            tag = file_tag(file)
            for index, item in enumerate(tqdm(data, desc=f"reading {file.name}", unit="dlg", leave=False)):
                stats["dialogues_read"] += 1
                try:
                    dialogue = parse_dialogue(item, file, index)
                    domains = dialogue.domains
                    if domains is None:
                        if fig_domains is None:
                            fig_domains = self._load_fig_domains(file, ctx)
                        domains = fig_domains.get(dialogue.pair_id)
                    if (dialogue.pair_id, dialogue.turns) in seen:
                        stats["duplicates"] += 1
                        continue
                    seen.add((dialogue.pair_id, dialogue.turns))
                    image = self._image_path(dialogue, file, index)
                except RecordError as err:
                    ctx.bad_record(err)
                    continue
                if image is None:
                    stats["missing_images"] += 1
                    stats["missing_images_histology"] += bool(domains and "histology" in domains)
                    continue
                occurrences[(tag, dialogue.pair_id)] += 1
                n = occurrences[(tag, dialogue.pair_id)]
                record_id = f"{tag}/{dialogue.pair_id}" + ("" if n == 1 else f"-{n}")
                found.append((record_id, tag, file, dialogue, domains, image))
        groups = link_by_identical_files((pmid_of(d.pair_id), image) for _, _, _, d, _, image in found)
        self.stats = {k: stats[k] for k in ("dialogues_read", "missing_images", "missing_images_histology",
                                             "duplicates")}
        if stats["missing_images"]:
            ctx.note(f"llava_med: {stats['missing_images']} dialogue(s) skipped because their image file is missing "
                     f"({stats['missing_images_histology']} of them histology); dead PMC links are normal")
        if stats["duplicates"]:
            ctx.note(f"llava_med: {stats['duplicates']} exact duplicate dialogue(s) (same pair_id and turns) dropped")
        return [
            SourceRecord(self.name, record_id, tag, ("file", str(image)), {
                "pair_id": d.pair_id, "pmid": pmid_of(d.pair_id), "group": groups[pmid_of(d.pair_id)],
                "turns": d.turns, "domains": domains, "file": file.name,
            })
            for record_id, tag, file, d, domains, image in found
        ]

    def _load_fig_domains(self, file: Path, ctx: BuildContext) -> dict[str, tuple[str, ...]]:
        if self.fig_captions is None:
            raise InputError(
                f"{file.name} has records without 'domain', and {FIG_CAPTIONS} (which holds them) was not found",
                file=file, fix=f"download {FIG_CAPTIONS} into the same folder",
            )
        return fig_caption_domains(load_json(self.fig_captions), self.fig_captions, ctx)

    def input_files(self) -> list[Path]:
        """The JSON files and the images of the records read (not every figure in images/)."""
        records = self._cache_records
        if records is None:
            records = self._scan(BuildContext(on_error="skip"))
        files = {*self.instruct, *([self.fig_captions] if self.fig_captions else [])}
        files |= {Path(r.locator[1]) for r in records}
        return sorted(files)
