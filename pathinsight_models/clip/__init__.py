"""Pathology CLIP track: tiny CLIP/SigLIP models, contrastive training, zero-shot / retrieval / linear-probe
evaluation, open_clip loading and conversion, and LLaVA assembly on a CLIP/SigLIP vision tower.

Public API (imported lazily so `import pathinsight_models.clip` stays cheap):
`save_tiny_clip`, `build_tiny_clip`, `save_tiny_lm`, `train_clip`, `evaluate_clip`, `load_encoder`,
`get_prompt_set`, `list_prompt_sets`, `PromptSet`, `open_clip_to_transformers`, `convert_open_clip`,
`assemble_llava`, `run_clip_demo`.
"""

from __future__ import annotations

from pathenhanceds.lazy import lazy_exports

_EXPORTS = {
    "build_tiny_clip": "pathinsight_models.clip.tiny",
    "save_tiny_clip": "pathinsight_models.clip.tiny",
    "save_tiny_lm": "pathinsight_models.clip.tiny",
    "train_clip": "pathinsight_models.clip.train",
    "ClipArguments": "pathinsight_models.clip.train",
    "evaluate_clip": "pathinsight_models.clip.evaluate",
    "load_encoder": "pathinsight_models.clip.zeroshot",
    "PromptSet": "pathinsight_models.clip.zeroshot",
    "get_prompt_set": "pathinsight_models.clip.zeroshot",
    "list_prompt_sets": "pathinsight_models.clip.zeroshot",
    "open_clip_to_transformers": "pathinsight_models.clip.open_clip",
    "convert_open_clip": "pathinsight_models.clip.open_clip",
    "run_clip_demo": "pathinsight_models.clip.demo",
    "assemble_llava": "pathinsight_models.clip.assemble",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
