"""PathInstruct, PubMed part (PathAsst; Hugging Face `jamessyx/PathInstruct`, gated).

Native layout (assumed: the repository and card do not show the files): DIR holds LLaVA-style
instruction JSON (a list of `{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}`;
every `*.json` directly in DIR is read) and the PubMed figures under `DIR/images/` (or DIR). A
dialogue whose figure is absent is a counted skip.

Splits keep a PubMed Central article (a `PMC<digits>` in the image name or id) together, so the
figures of one paper never straddle splits; images without one are their own group.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from .base import register_source
from .instruct_json import Instruct, InstructSource

_PMC = re.compile(r"PMC\d+", re.IGNORECASE)


def article_of(image: str, record_id: str = "") -> str:
    """The `PMC<digits>` article of a figure (from the image name, then the id); else the image stem."""
    for text in (image, record_id):
        match = _PMC.search(text)
        if match:
            return match.group(0).upper()
    return PurePosixPath(image.replace("\\", "/")).stem


@register_source
class PathInstruct(InstructSource):
    """Reader of PathAsst's PathInstruct (PubMed part) dialogues with their figures."""

    name = "pathinstruct"
    license = "CC-BY-NC-2.0"
    description = ("PathInstruct (PathAsst), PubMed part: ChatGPT-generated dialogues about PubMed pathology "
                   "figures; licence assumed as the authors' PathCap (CC BY-NC 2.0), research use")
    image_dirs = ("images", "figures")
    json_hint = "the PathInstruct JSON"

    def group_of(self, item: Instruct) -> str:
        """The PubMed Central article of the figure."""
        return article_of(item.image, item.id)

    def extra_fields(self, item: Instruct) -> dict[str, Any]:
        """The article id, for reports."""
        return {"article": article_of(item.image, item.id)}
