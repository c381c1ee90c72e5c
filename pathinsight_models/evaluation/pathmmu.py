"""Read PathMMU (`data.json` + images) into multiple-choice items.

The PathMMU release is not in our reference files, so this reader follows the published structure
as we understand it and accepts its plausible variants:

- the file is a JSON object mapping subset name (PubMed, SocialPath, EduContent, Atlas, PathCLS, ...)
  to either a list of items or an object mapping split name (``val``, ``test``, ``test_tiny``) to a
  list of items; a bare list of items (no subsets) is accepted too;
- an item has ``No`` (its number), ``img`` (image path), ``question``, ``options`` (a list like
  ``["A) ...", "B) ...", ...]``) and ``answer`` (a letter such as ``"A"``, or ``"(A)"``);
- ``img`` is resolved against the directory of ``data.json``, then its ``images/`` folder, then by
  file name inside ``images/``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.schema import make_messages

from .parsers import split_options
from .tasks import Item

INSTRUCTION = "Answer with the option's letter from the given choices directly."
REQUIRED = ("img", "question", "options", "answer")


def find_data_json(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / "data.json", path / "PathMMU" / "data.json"):
        if candidate.is_file():
            return candidate
    raise InputError("PathMMU data.json not found", file=path,
                     fix="pass the PathMMU folder (holding data.json and images/) or the data.json file")


def _entries(data: Any, split: str | None, file: Path) -> list[tuple[str | None, dict[str, Any]]]:
    if isinstance(data, list):
        return [(None, item) for item in data]
    if not isinstance(data, dict):
        raise InputError("PathMMU data.json must hold a list or an object of subsets", file=file)
    out: list[tuple[str | None, dict[str, Any]]] = []
    for subset, value in data.items():
        if isinstance(value, list):
            out += [(subset, item) for item in value]
        elif isinstance(value, dict):
            splits = [split] if split else list(value)
            for name in splits:
                if name in value:
                    if not isinstance(value[name], list):
                        raise InputError(f"subset {subset!r} split {name!r} is not a list", file=file)
                    out += [(subset, item) for item in value[name]]
        else:
            raise InputError(f"subset {subset!r} is neither a list nor an object of splits", file=file)
    return out


def _resolve_image(root: Path, img: str) -> Path | None:
    for candidate in (root / img, root / "images" / img, root / "images" / Path(img).name):
        if candidate.is_file():
            return candidate
    return None


def prompt_text(question: str, options: Sequence[str]) -> str:
    lines = [f"{letter}) {text}" for letter, text in split_options(options)]
    return "\n".join([question.strip(), *lines, INSTRUCTION])


def _loader(path: Path):
    def load():
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")
    return load


def read_pathmmu(
    path: str | Path, *, split: str | None = "test", subsets: Sequence[str] | None = None
) -> list[Item]:
    """Items for the `pathmmu` task. `split` applies to the subset -> split -> items layout only."""
    file = find_data_json(path)
    root = file.parent
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"PathMMU data.json is not valid JSON ({exc.msg})", file=file) from None
    entries = _entries(data, split, file)
    if subsets:
        entries = [(s, it) for s, it in entries if s in set(subsets)]
    items: list[Item] = []
    missing: list[str] = []
    for subset, raw in entries:
        if not isinstance(raw, dict) or any(k not in raw for k in REQUIRED):
            raise InputError(f"PathMMU item lacks one of {', '.join(REQUIRED)}", file=file,
                             record=raw.get("No") if isinstance(raw, dict) else raw)
        image = _resolve_image(root, str(raw["img"]))
        if image is None:
            missing.append(str(raw["img"]))
            continue
        number = raw.get("No", len(items))
        options = [str(o) for o in raw["options"]]
        text = prompt_text(str(raw["question"]), options)
        items.append({
            "id": f"{subset}/{number}" if subset else str(number),
            "messages": make_messages([("user", text)]),
            "prompt": text,
            "reference": str(raw["answer"]).strip().strip("()").upper(),
            "options": options,
            "subset": subset,
            "group": str(raw["img"]),
            "image": _loader(image),
        })
    if missing:
        raise InputError(f"{len(missing)} PathMMU images not found (first: {missing[0]})", file=root,
                         fix="put the images next to data.json as the `img` paths say, or under images/")
    if not items:
        raise InputError("no PathMMU items selected", file=file, fix="check --pathmmu-split and the subset names")
    return items
