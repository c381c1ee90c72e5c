"""Synthetic LLaVA-Med instruct data in its native layout.

`instruct/llava_med_instruct_10k.json` carries `domain` and `"<image>\\n..."` first turns;
`instruct/llava_med_instruct_60k_inline_mention.json` spells the key `conversatons`, has no
`domain` (histology comes from the fig-captions join) and puts `<image>` after the question.
`instruct/llava_med_instruct_fig_captions.json` groups the figures by domain. Some figures have
no image (dead PMC links), some appear in both files, one dialogue is repeated exactly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..sources.llava_med import DOMAINS
from .textures import texture

_HISTOLOGY_STYLES = ("TUM", "STR", "LYM", "NORM", "MUC", "ADI", "grade1", "grade2")
_OTHER = {"chest_xray": "BACK", "mri": "grade3", "ct_scan": "normal", "gross": "MUS"}
_QA = (
    ("What does this synthetic figure show?", "It shows a synthetic {style} texture generated for tests."),
    ("Which stain does the synthetic texture imitate?", "It imitates hematoxylin and eosin staining (synthetic)."),
    ("Is anything notable in this synthetic {domain} image?", "Only the generated {style} pattern; it is synthetic."),
)


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _turns(style: str, domain: str, pairs: int, image_first: bool, extra: str = "") -> list[dict[str, str]]:
    turns = []
    for k in range(pairs):
        question, answer = (t.format(style=style, domain=domain) for t in _QA[k])
        if k == 0:
            question = f"<image>\n{question}{extra}" if image_first else f"{question}{extra}\n<image>"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return turns


def write(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """Write the synthetic llava_med source in its native layout into `folder` (sizes from `sizes`, pixels from `rng`)."""
    instruct, images = folder / "instruct", folder / "images"
    instruct.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    ten_k: list[dict[str, Any]] = []
    inline: list[dict[str, Any]] = []
    captions: dict[str, list[dict[str, Any]]] = {d: [] for d in DOMAINS}
    others = list(_OTHER)
    for i in range(sizes.llava_med_papers):
        pmid = str(31_000_000 + 1_009 * i)
        domain = "histology" if i % 4 != 3 else others[(i // 4) % len(others)]
        for j in range(1 + i % 3):
            pair_id = f"{pmid}_F{j + 1}"
            style = _HISTOLOGY_STYLES[(i + j) % len(_HISTOLOGY_STYLES)] if domain == "histology" else _OTHER[domain]
            array = texture(style, 64, rng)
            if (i + j) % 9 != 4:  # the rest stay missing, like dead PMC links
                (images / f"{pair_id}.jpg").write_bytes(_jpeg(array))
            flags = {d: d == domain for d in DOMAINS}
            captions[domain].append({
                "pmid": pmid, "pair_id": pair_id, "fig_label": f"F{j + 1}",
                "fig_caption": f"Synthetic figure {j + 1}: a generated {style} texture.",
                "in_text_mention": None if j else [{"tokens": f"(synthetic mention of figure {j + 1})"}],
                "domain": flags,
            })
            pairs = 1 + (i + j) % 3
            if (i + j) % 2 == 0 or i % 5 == 0:
                ten_k.append({"id": pair_id, "image": f"{pair_id}.jpg", "domain": flags,
                              "conversations": _turns(style, domain, pairs, image_first=True)})
                if i == 2 and j == 0:  # an exact repeat, which the reader drops
                    ten_k.append(json.loads(json.dumps(ten_k[-1])))
            if (i + j) % 2 == 1 or i % 5 == 0:
                inline.append({"id": pair_id, "image": f"{pair_id}.jpg",
                               "conversatons": _turns(style, domain, pairs, image_first=False,
                                                      extra=" (as mentioned in the synthetic text)")})
    (instruct / "llava_med_instruct_10k.json").write_text(json.dumps(ten_k, indent=1))
    (instruct / "llava_med_instruct_60k_inline_mention.json").write_text(json.dumps(inline, indent=1))
    (instruct / "llava_med_instruct_fig_captions.json").write_text(json.dumps(captions, indent=1))
