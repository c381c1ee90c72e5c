"""LLaVA-Med instruct dialogues (Microsoft): `llava_med_instruct_*.json` + `images/<pair_id>.jpg`.

Any subset of the three instruct files may be present. Histology is read from each record's
`domain`, or, when a file carries no `domain`, by joining `id == pair_id` with
`llava_med_instruct_fig_captions.json`. Many PMC image links are dead, so a missing image is a
counted skip, never an error.

Ids are namespaced by file (`10k/<pair_id>`, `60k/<pair_id>`, `60k_inline_mention/<pair_id>`):
the 10k and 60k files hold *different* GPT-generated dialogues about the same figures, and the
paper kept both. A dialogue whose pair_id and turns equal an earlier one is an exact duplicate
and is dropped (counted in a note).

The released files went through LLaVA-Med's own `clean_conv` (llava/instruct/instruct_postprocess.py),
which drops QA pairs whose answer apologises or cites the caption. When it dropped the first pair, the
dialogue has no `<image>` token; it is kept (the image goes at the start of the first remaining user
turn, as for every row), flagged `no_image_token` and counted, never an error.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..errors import InputError, RecordError
from ..jsonio import load_json
from ..limits import check_regular, inside, is_valid_text, walk_files
from .base import BuildContext, ScannedSource, SourceRecord, link_by_identical_files, register_source
from .instruct_json import IMAGE_TOKEN, parse_turns

INSTRUCT_FILES = (
    "llava_med_instruct_10k.json",
    "llava_med_instruct_60k.json",
    "llava_med_instruct_60k_inline_mention.json",
)
FIG_CAPTIONS = "llava_med_instruct_fig_captions.json"
DOMAINS = ("chest_xray", "mri", "ct_scan", "histology", "gross")
ROLES = {"human": "user", "gpt": "assistant"}
_CONVERSATION_KEYS = ("conversations", "conversatons")  # some derived files misspell the key
_FIX = ('each record must be {"id": "<pmid>_<fig>", "image": "...jpg", "conversations": '
        '[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}')


@dataclass(frozen=True, slots=True)
class Dialogue:
    """One validated instruct record."""

    pair_id: str
    image: str | None  # the record's own `image` field, if any
    turns: tuple[tuple[str, str], ...]  # (user|assistant, text), image token removed
    domains: tuple[str, ...] | None  # true domains; None when the record has no `domain`
    # The first human turn held no `<image>`: LLaVA-Med's `clean_conv` dropped the first QA pair (the one
    # that carried the token). The image goes at the start of the first remaining user turn, as for every row.
    no_image_token: bool = False


# ---- pure helpers ----


def file_tag(path: Path) -> str:
    """`llava_med_instruct_10k.json` -> `10k` (the id namespace of a file's records)."""
    return path.stem.removeprefix("llava_med_instruct_")


def pmid_of(pair_id: str) -> str:
    """The PubMed id of a figure: the part of `pair_id` before the first `_`."""
    return pair_id.split("_", 1)[0]


def true_domains(value: object) -> tuple[str, ...] | None:
    """`{"histology": true, "mri": false, ...}` -> `("histology",)`; None if not such a mapping."""
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        return None
    return tuple(sorted(str(k) for k, v in value.items() if v))


def _turn(turn: object, k: int, file: Path, where: str) -> tuple[str, str]:
    """(role, raw text) of one `{"from": "human"|"gpt", "value": ...}` turn, in its place."""
    if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
        raise RecordError(f"turn {k} is not an object with a string 'value'", file=file, record=where, fix=_FIX)
    speaker = turn.get("from")
    role = ROLES.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        raise RecordError(f"turn {k} has unknown role {speaker!r} (expected 'human' or 'gpt')",
                          file=file, record=where, fix=_FIX)
    expected = "user" if k % 2 == 0 else "assistant"
    if role != expected:
        raise RecordError(f"turn {k} is from {speaker!r}; turns must alternate human, gpt, ...",
                          file=file, record=where, fix=_FIX)
    return role, turn["value"]


def parse_dialogue(item: object, file: Path, index: int) -> Dialogue:
    """Validate one instruct record; raises `RecordError` naming the file and record."""
    where = f"{file.name}[{index}]"
    if not isinstance(item, dict):
        raise RecordError(f"record is a JSON {type(item).__name__}, not an object", file=file, record=where, fix=_FIX)
    pair_id = item.get("id")
    image = item.get("image")
    if not isinstance(pair_id, str) or not pair_id.strip():
        if not isinstance(image, str) or not image.strip():
            raise RecordError("record has neither an 'id' nor an 'image' string", file=file, record=where, fix=_FIX)
        pair_id = PurePosixPath(image).stem
    pair_id = pair_id.strip()
    if not is_valid_text(pair_id):
        raise RecordError("'id' holds invalid Unicode (a lone surrogate)", file=file, record=where, fix=_FIX)
    where = f"{where} (id {pair_id})"
    if image is not None and not isinstance(image, str):
        raise RecordError(f"'image' is a {type(image).__name__}, not a string", file=file, record=where, fix=_FIX)
    key = next((k for k in _CONVERSATION_KEYS if k in item), None)
    turns_raw = item.get(key) if key else None
    # 0 tokens in the first turn is accepted: see `Dialogue.no_image_token`
    turns = parse_turns(turns_raw, file, where, fix=_FIX, read_turn=_turn, image_optional=True)
    domains = None
    if "domain" in item:
        domains = true_domains(item["domain"])
        if domains is None:
            raise RecordError("'domain' is not an object of booleans", file=file, record=where,
                              fix=f"'domain' maps {', '.join(DOMAINS)} to true/false")
    no_token = IMAGE_TOKEN not in turns_raw[0]["value"]
    return Dialogue(pair_id, image, turns, domains, no_token)


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
class LlavaMed(ScannedSource):
    """Reader of the LLaVA-Med instruct JSON files with their images and figure-caption domains."""
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

    def _find(self, root: Path, name: str) -> Path | None:
        hits = sorted(walk_files(root, limits=self.lim, name=name), key=lambda p: (len(p.parts), str(p)))
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
        record = f"{file.name}[{index}] (id {dialogue.pair_id})"
        for name in names:
            if not is_valid_text(name):
                raise RecordError("'image' holds invalid Unicode (a lone surrogate)", file=file, record=record,
                                  fix="'image' must be a file name inside images/")
            candidate = inside(self.images, self.images, name, file=file, record=record, limits=self.lim,
                               what="image path", area="images folder")
            if os.path.lexists(candidate):  # present but a FIFO/folder/dangling link: an error, not "missing"
                check_regular(candidate, file=file, record=record, limits=self.lim, root=self.source_root,
                              what=f"image {name!r}")
                return candidate
        return None

    def _scan(self, ctx: BuildContext) -> list[SourceRecord]:
        fig_domains: dict[str, tuple[str, ...]] | None = None
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        occurrences: Counter[tuple[str, str]] = Counter()
        stats: Counter[str] = Counter()
        found: list[tuple[str, str, Path, Dialogue, tuple[str, ...] | None, Path]] = []
        for file in self.instruct:
            data = load_json(file, limits=self.lim)
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
                stats["no_image_token"] += dialogue.no_image_token
                stats["no_image_token_histology"] += dialogue.no_image_token and bool(domains and "histology" in domains)
                occurrences[(tag, dialogue.pair_id)] += 1
                n = occurrences[(tag, dialogue.pair_id)]
                record_id = f"{tag}/{dialogue.pair_id}" + ("" if n == 1 else f"-{n}")
                found.append((record_id, tag, file, dialogue, domains, image))
        groups = link_by_identical_files((pmid_of(d.pair_id), image) for _, _, _, d, _, image in found)
        self.stats = {k: stats[k] for k in ("dialogues_read", "missing_images", "missing_images_histology",
                                             "duplicates", "no_image_token", "no_image_token_histology")}
        if stats["missing_images"]:
            ctx.note(f"llava_med: {stats['missing_images']} dialogue(s) skipped because their image file is missing "
                     f"({stats['missing_images_histology']} of them histology); dead PMC links are normal")
        if stats["duplicates"]:
            ctx.note(f"llava_med: {stats['duplicates']} exact duplicate dialogue(s) (same pair_id and turns) dropped")
        return [
            SourceRecord(self.name, record_id, tag, ("file", str(image)), {
                "pair_id": d.pair_id, "pmid": pmid_of(d.pair_id), "group": groups[pmid_of(d.pair_id)],
                "turns": d.turns, "domains": domains, "file": file.name, "no_image_token": d.no_image_token,
            })
            for record_id, tag, file, d, domains, image in found
        ]

    def _load_fig_domains(self, file: Path, ctx: BuildContext) -> dict[str, tuple[str, ...]]:
        if self.fig_captions is None:
            raise InputError(
                f"{file.name} has records without 'domain', and {FIG_CAPTIONS} (which holds them) was not found",
                file=file, fix=f"download {FIG_CAPTIONS} into the same folder",
            )
        return fig_caption_domains(load_json(self.fig_captions, limits=self.lim), self.fig_captions, ctx)

    def metadata_files(self) -> list[Path]:
        """The instruct JSON files and the fig-captions file, if found."""
        return [*self.instruct, *([self.fig_captions] if self.fig_captions else [])]
