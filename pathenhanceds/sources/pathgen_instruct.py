"""PathGen-Instruct (~200K dialogues about PathGen-1.6M patches; PathGen-1.6M authors, Hugging Face
`jamessyx/PathGen-Instruct`).

Native layout: DIR holds the instruction JSON (LLaVA style: a list of `{"id", "image",
"conversations": [{"from": "human"|"gpt", "value"}]}`; any `*.json` directly in DIR is read, except
PathGen-1.6M's own caption files) and the patches under `DIR/images/` (or DIR). The patches are the
user's own: cut from the TCGA slides with PathGen's script (file names `<wsi_id>_<x>_<y>.png`) or with
the `pathgen` source. A dialogue whose patch is absent is a counted skip.

Splits keep a TCGA patient (the first 12 characters of `wsi_id`) together with the very same seeded
hash and fractions as the `pathgen` source, so a patient is in the same split in both sources.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from .base import register_source
from .instruct_json import Instruct, InstructSource
from .pathgen import JSON_NAMES, patient_of


def wsi_id_of(image: str) -> str:
    """`TCGA-...-DX1.<uuid>_41024_35104.png` -> `TCGA-...-DX1.<uuid>` (the stem without a trailing `_x_y`)."""
    stem = PurePosixPath(image.replace("\\", "/")).stem
    parts = stem.rsplit("_", 2)
    return parts[0] if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() else stem


@register_source
class PathGenInstruct(InstructSource):
    """Reader of PathGen-Instruct dialogues with their TCGA patches."""

    name = "pathgen_instruct"
    license = "CC-BY-NC-4.0"
    description = ("PathGen-Instruct: GPT-generated dialogues about PathGen-1.6M TCGA patches; PathGen data terms: "
                   "CC BY 4.0 card, research only, no commercial or clinical use (recorded as NC)")
    image_dirs = ("images", "patches")
    json_hint = "the PathGen-Instruct JSON"

    def candidate_files(self) -> list[Path]:
        """Every JSON in DIR but PathGen-1.6M's caption files (users often keep both in one folder)."""
        return [p for p in super().candidate_files() if p.name not in JSON_NAMES]

    def group_of(self, item: Instruct) -> str:
        """The TCGA patient of the patch (its slide id when it is not a TCGA barcode)."""
        return patient_of(wsi_id_of(item.image))

    def extra_fields(self, item: Instruct) -> dict[str, Any]:
        """The slide the patch comes from."""
        return {"wsi_id": wsi_id_of(item.image)}
