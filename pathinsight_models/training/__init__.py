"""Supervised fine-tuning of native `transformers` VLMs with TRL `SFTTrainer` + PEFT.

Public API (imported lazily so `import pathinsight_models.training` stays cheap):
`train(recipe, **overrides) -> Path`, `load_recipe(...)`, `Recipe`, `merge_adapter(adapter_dir, out_dir)`.
"""

from __future__ import annotations

from pathenhanceds.lazy import lazy_exports

_EXPORTS = {
    "train": "pathinsight_models.training.trainer",
    "load_recipe": "pathinsight_models.training.recipe",
    "Recipe": "pathinsight_models.training.recipe",
    "RecipeArguments": "pathinsight_models.training.recipe",
    "merge_adapter": "pathinsight_models.training.artifacts",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
