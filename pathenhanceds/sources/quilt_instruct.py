"""Quilt-Instruct (Quilt-LLaVA, 107K dialogues grounded in histopathology YouTube videos; Hugging Face
`wisdomik/QUILT-LLaVA-Instruct-107K`, CC BY-NC-ND 3.0, gated).

Native layout: DIR holds the released JSON files (`quilt_instruct_107k.json`, or its parts
`quilt_instruct_conv_desc.json` / `quilt_instruct_complex_abductive.json`, or the ablation subset
`quilt_instruct_ablation_40k.json`) and the images, obtained by the user from Quilt-1M under its
data-use agreement, under `DIR/images/` or `DIR/quilt_1m/` (a symlink to the download is fine), at
the record's `image` path. The full file is read when present (its parts repeat it); otherwise the
parts; the ablation subset only when it is the only file. Records are `{"id": "<video id>_<n>",
"image", "conversations"}`; turns spelled `{"role": "User"|"GPT", "content"}` (their notebook) are
read too. A dialogue whose image is absent is a counted skip.

Splits keep a YouTube video (the id without its trailing `_<n>`) together.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError
from .base import register_source
from .instruct_json import Instruct, InstructSource

FULL = "quilt_instruct_107k.json"
PARTS = ("quilt_instruct_conv_desc.json", "quilt_instruct_complex_abductive.json")
ABLATION = "quilt_instruct_ablation_40k.json"
_ROW = re.compile(r"^(?P<video>.+)_\d+$")


def video_of(record_id: str) -> str:
    """`x7Ubz-ZcZr0_3` -> `x7Ubz-ZcZr0` (Quilt row ids are `<YouTube id>_<n>`; other ids are their own group)."""
    match = _ROW.match(record_id)
    return match.group("video") if match else record_id


@register_source
class QuiltInstruct(InstructSource):
    """Reader of Quilt-Instruct dialogues with Quilt-1M images."""

    name = "quilt_instruct"
    license = "CC-BY-NC-ND-3.0"
    description = ("Quilt-Instruct (Quilt-LLaVA): dialogues from narrated histopathology YouTube videos; "
                   "CC BY-NC-ND 3.0, images from Quilt-1M under its data-use agreement (research only)")
    image_dirs = ("images", "quilt_1m")
    json_hint = f"{FULL} (or its parts {', '.join(PARTS)})"

    def instruct_files(self) -> list[Path]:
        """The full file if present, else its parts, else the ablation subset."""
        if self.path.is_file():
            return self.candidate_files()
        present = {p.name: p for p in self.candidate_files()}
        for names in ((FULL,), PARTS, (ABLATION,)):
            found = [present[n] for n in names if n in present]
            if found:
                return found
        raise InputError(f"no Quilt-Instruct file ({FULL}, {', '.join(PARTS)} or {ABLATION}) found", file=self.path,
                         fix="download the JSON from wisdomik/QUILT-LLaVA-Instruct-107K into this folder")

    def group_of(self, item: Instruct) -> str:
        """The YouTube video of the dialogue."""
        return video_of(item.id)
