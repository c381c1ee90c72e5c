"""`pathmmu`: PathMMU multiple choice: accuracy overall and per subset; an unparsed answer is wrong.

The task reads its own files (`read_pathmmu`, not PathEnhanceDS rows): `data.json` + images. Prompt:
the question, the lettered options and `INSTRUCTION` (``prompt_format="ours"``), or PathMMU's own
format (``pathmmu-llava1.5`` ...; `pathmmu_parse.PROMPT_FORMATS`). Parser:
`pathmmu_parse.parse_pathmmu_answer` (a letter in any usual phrasing, or the text of exactly one
option; never a random guess). References: `pathmmu_parse.read_reference` (a letter, "(B)",
"B) text", "B. text" or the option text; anything else is an input error naming the item).

The PathMMU release is not in our reference files, so this reader follows the published structure
as we understand it and accepts its plausible variants:

- the file is a JSON object mapping subset name (PubMed, SocialPath, EduContent, Atlas, PathCLS, ...)
  to either a list of items or an object mapping split name (``val``, ``test``, ``test_tiny``) to a
  list of items; a bare list of items (no subsets) is accepted too;
- an item has ``No`` (its number), ``img`` (image path), ``question``, ``options`` (a list like
  ``["A) ...", "B) ...", ...]``) and ``answer`` (``"A"``, ``"(A)"``, ``"A) text"``, ``"A. text"``);
- ``img`` is resolved against the directory of ``data.json``, then its ``images/`` folder, then by
  file name inside ``images/``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathenhanceds.errors import InputError
from pathenhanceds.schema import make_messages

from ..bootstrap import mean_stat
from ..parsers import split_options
from ..pathmmu_parse import parse_pathmmu_answer, pathmmu_prompt, read_reference
from . import Item, Task, TaskScore, register_task
from .common import failure_reasons

INSTRUCTION = "Answer with the option's letter from the given choices directly."
REQUIRED = ("img", "question", "options", "answer")


def find_data_json(path: str | Path) -> Path:
    """The `data.json` of a PathMMU folder (or the file itself)."""
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
    """The prompt: question, one lettered option per line, then `INSTRUCTION`."""
    lines = [f"{letter}) {text}" for letter, text in split_options(options)]
    return "\n".join([question.strip(), *lines, INSTRUCTION])


def _loader(path: Path):
    def load():
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")
    return load


def read_pathmmu(
    path: str | Path, *, split: str | None = "test", subsets: Sequence[str] | None = None,
    prompt_format: str = "ours",
) -> list[Item]:
    """Items for the `pathmmu` task. `split` applies to the subset -> split -> items layout only;
    `prompt_format` names a `pathmmu_parse.PROMPT_FORMATS` entry (``ours`` or PathMMU's ``pathmmu-*``)."""
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
        item_id = f"{subset}/{number}" if subset else str(number)
        options = [str(o) for o in raw["options"]]
        text = pathmmu_prompt(str(raw["question"]), options, prompt_format, record=item_id)
        items.append({
            "id": item_id,
            "messages": make_messages([("user", text)]),
            "prompt": text,
            "reference": read_reference(raw["answer"], options, record=item_id, file=file),
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


def score_pathmmu(items: list[Item], modes: Sequence[str]) -> TaskScore:
    """Accuracy overall and per subset; an answer naming no (or several) options counts as wrong."""
    parsed, correct, records = [], [], []
    for it in items:
        options = it.get("options")
        if not options:
            raise InputError(f"PathMMU item {it.get('id')!r} has no options", record=it.get("id"),
                             fix='give "options": ["A) ...", "B) ...", ...]')
        answer = read_reference(it.get("label") or it.get("reference"), options, record=it.get("id"))
        p = parse_pathmmu_answer(it.get("prediction"), options)
        parsed.append(p)
        correct.append(p.value == answer)
        records.append({"parsed": p.value, "correct": p.value == answer, **({"reason": p.reason} if p.reason else {})})
    metrics = {"strict": {"accuracy": float(np.mean(correct)) if correct else float("nan")}}
    stats = {"strict": {"accuracy": mean_stat([float(c) for c in correct])}}
    subsets = sorted({str(it["subset"]) for it in items if it.get("subset")})
    for subset in subsets:
        vals = [float(c) if it.get("subset") == subset else None for it, c in zip(items, correct, strict=True)]
        defined = [v for v in vals if v is not None]
        metrics["strict"][f"accuracy_{subset}"] = float(np.mean(defined))
        stats["strict"][f"accuracy_{subset}"] = mean_stat(vals)
    extras = {"unparsed_policy": "wrong and counted (never a random option)",
              "subset_n": dict(Counter(str(it.get("subset")) for it in items if it.get("subset")))}
    return TaskScore(metrics, stats, records, sum(not p.ok for p in parsed), failure_reasons(parsed), extras)


TASK = register_task(Task(
    name="pathmmu", description="PathMMU multiple choice: accuracy overall and per subset, unparsed = wrong",
    scorer=score_pathmmu, modes=("strict",), headline=(("strict", "accuracy", "PathMMU acc"),),
    max_new_tokens=32, rows=None, fields=("options", "subset"),
    parsing="option letter (lone, leading 'B)'/'B,', 'answer: B', 'I would say B', '(B)'), else the text of "
            "exactly one option; hedges and several letters -> unparsed; never a random guess",
    order=50,
))
