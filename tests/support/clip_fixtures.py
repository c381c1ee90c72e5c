"""open_clip checkpoints for the CLIP tests: random models saved in open_clip's hub layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def write_open_clip(root: Path, cfg: dict[str, Any]) -> Path:
    """A random open_clip `CLIP(**cfg)` (seed 0) saved in `root` as `open_clip_config.json` + safetensors."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = CLIP(**cfg).eval()
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic", "resize_mode": "shortest"}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "open_clip_model.safetensors"))
    return root
