"""Synthetic PathGen-Instruct, Quilt-Instruct, PathInstruct and PMC-VQA sources in their native layouts.

Tiny on purpose (a few 32x32 images each) so every test build stays fast. Each has one record whose
image is "not downloaded" (a counted skip). Quilt-Instruct mixes both turn spellings (`from`/`value`
and `role`/`content`) and both `<image>` placements, and ships a part file the reader must ignore
because the full file is present. PMC-VQA mixes pathology and radiology questions, spells the answer
column `Answer` in train and `Anwser` in test (both occur upstream) and ships `test_clean.csv`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .textures import texture

_STYLES = ("TUM", "STR", "LYM", "NORM", "MUC", "ADI", "grade1", "grade2", "DEB", "MUS")
_SIZE = 32


def _image(path: Path, style: str, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    array = texture(style, _SIZE, rng)
    if path.suffix == ".png":
        Image.fromarray(array, "RGB").save(buffer, format="PNG")
    else:
        Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())


def _dialogue(style: str, k: int, image_first: bool, spelling: str = "from") -> list[dict[str, str]]:
    question = f"What does this synthetic {style} patch show?"
    question = f"<image>\n{question}" if image_first else f"{question}\n<image>"
    turns = [(question, f"A generated {style} texture (synthetic, for tests)."),
             ("Which stain does it imitate?", "Hematoxylin and eosin, synthetically.")][: 1 + k % 2]
    if spelling == "role":
        return [t for q, a in turns for t in ({"role": "User", "content": q}, {"role": "GPT", "content": a})]
    return [t for q, a in turns for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]


def write_pathgen_instruct(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """`PathGen-Instruct.json` + `images/<wsi_id>_<x>_<y>.png` (patches named like PathGen's cutting script)."""
    records = []
    for i in range(sizes.instruct_dialogues):
        wsi_id = f"TCGA-S{i % 4}-{1000 + i % 4}-01Z-00-DX1.{i % 4:08X}-0000-4000-8000-SYNTHETIC000"
        name = f"{wsi_id}_{1344 * i}_{672 * (i % 3)}.png"
        style = _STYLES[i % len(_STYLES)]
        if i != 1:  # patch 1 is "not cut yet"
            _image(folder / "images" / name, style, rng)
        records.append({"id": f"pathgen_instruct_{i:05d}", "image": name,
                        "conversations": _dialogue(style, i, image_first=i % 2 == 0)})
    (folder / "PathGen-Instruct.json").write_text(json.dumps(records, indent=1))


def write_quilt_instruct(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """`quilt_instruct_107k.json` (+ an ignored part file) + `quilt_1m/<video>_<n>.jpg`."""
    records = []
    for i in range(sizes.instruct_dialogues):
        row_id = f"SynVid{i % 3:05d}_{i}"  # YouTube-style id + row number; 3 videos
        name = f"{row_id}.jpg"
        style = _STYLES[(i + 3) % len(_STYLES)]
        if i != 2:
            _image(folder / "quilt_1m" / name, style, rng)
        records.append({"id": row_id, "image": name,
                        "conversations": _dialogue(style, i, image_first=i % 3 != 1,
                                                   spelling="role" if i % 4 == 3 else "from")})
    (folder / "quilt_instruct_107k.json").write_text(json.dumps(records, indent=1))
    (folder / "quilt_instruct_conv_desc.json").write_text(json.dumps(records[:2], indent=1))  # a part: ignored


def write_pathinstruct(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """`PathInstruct.json` + `images/PMC<id>_F<n>.jpg` (PubMed figures)."""
    records = []
    for i in range(sizes.instruct_dialogues):
        name = f"PMC{7000000 + i // 2}_F{i % 2 + 1}.jpg"  # two figures per article
        style = _STYLES[(i + 5) % len(_STYLES)]
        if i != 3:
            _image(folder / "images" / name, style, rng)
        records.append({"id": f"pathinstruct_{i}", "image": name,
                        "conversations": _dialogue(style, i, image_first=True)})
    (folder / "PathInstruct.json").write_text(json.dumps(records, indent=1))


_PMC_QUESTIONS = (
    ("What does the H&E stained section show?", ("Necrosis", "Fibrosis", "Normal tissue", "Granuloma"), "B", True),
    ("What is seen on the axial CT scan?", ("A mass", "Effusion", "Nothing", "Fracture"), "A", False),
    ("Which structure is highlighted by immunohistochemistry?", ("Nuclei", "Stroma", "Vessels", "Glands"), "C", True),
    ("What does the MRI show?", ("Oedema", "Haemorrhage", "Infarct", "Tumour"), "D", False),
    ("What is the magnification of this micrograph?", ("x40", "x100", "x200", "x400"), "D", True),
    ("What does the chest X-ray show?", ("Consolidation", "Pneumothorax", "Normal", "Cardiomegaly"), "A", False),
)
_PMC_COLUMNS = ("Figure_path", "Question", "{answer}", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label")


def _pmc_csv(path: Path, rows: list[list[str]], answer_column: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([c.format(answer=answer_column) for c in _PMC_COLUMNS])
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def write_pmc_vqa(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """`train.csv` / `test.csv` / `test_clean.csv` + `images/PMC<id>_F<n>.jpg`; half pathology, half radiology."""
    rows: list[list[str]] = []
    for i in range(sizes.pmc_vqa_questions):
        question, choices, letter, pathology = _PMC_QUESTIONS[i % len(_PMC_QUESTIONS)]
        figure = f"PMC{8000000 + i}_F1.jpg"
        if i != 4:
            _image(folder / "images" / figure, "TUM" if pathology else "BACK", rng)
        answer = choices["ABCD".index(letter)]
        rows.append([figure, f"{question} (synthetic {i})", answer,
                     *(f"{lt}:{c}" for lt, c in zip("ABCD", choices, strict=True)), letter])
    cut = len(rows) * 2 // 3
    _pmc_csv(folder / "train.csv", rows[:cut], "Answer")
    _pmc_csv(folder / "test.csv", rows[cut:], "Anwser")
    _pmc_csv(folder / "test_clean.csv", rows[cut:cut + 1], "Anwser")
