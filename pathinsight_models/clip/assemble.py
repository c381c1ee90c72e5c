"""`pathinsight models assemble`: a `transformers` `LlavaForConditionalGeneration` from a CLIP/SigLIP vision
tower and a causal language model (the PathAsst / PathGen-LLaVA construction).

- Vision tower: the vision half of a `CLIPModel`/`SiglipModel` (or `...VisionModel`) checkpoint, copied
  weight for weight into `model.vision_tower`; an open_clip plain ViT is converted first
  (`clip.open_clip`). With `image_size` different from the tower's, the position embeddings are
  interpolated (bicubic, class token kept) and are then the only changed vision weights.
- Projector: `mlp2x_gelu` (Linear-GELU-Linear, LLaVA-1.5's), freshly initialised (seeded); it is the
  only projector `LlavaForConditionalGeneration` implements.
- Features: `vision_feature_layer` (default -2, LLaVA-1.5); CLIP drops its class token (`default`
  strategy, `num_additional_image_tokens=1`), SigLIP has none (`full`, 0).
- Processor: `LlavaProcessor` with the tower's image processor at `image_size`, the LM's tokenizer plus
  `<image>` (and `<pad>` when it has no pad token), and the LLaVA chat template with `{% generation %}`
  markers (`families.LLAVA_TEMPLATE`).

The output loads with `AutoModelForImageTextToText` / `AutoProcessor` and trains with the llava family
recipes (stage 1: `stage: align` on captions; stage 2: `stage: finetune`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

PROJECTORS = ("mlp2x_gelu",)
IMAGE_TOKEN = "<image>"


def _load_vision(vision: str) -> tuple[Any, Any, Any, str]:
    """(vision transformer module, vision config, image processor, kind) of a CLIP/SigLIP checkpoint."""
    from transformers import AutoImageProcessor, AutoModel

    from pathinsight_models.clip.zeroshot import is_open_clip

    source, scratch = vision, None
    if is_open_clip(vision):
        from pathinsight_models.clip.open_clip import convert_open_clip

        scratch = Path(tempfile.mkdtemp(prefix="pathinsight-openclip-"))
        source = str(convert_open_clip(vision, scratch / "hf"))
    try:
        model = AutoModel.from_pretrained(source)
        image_processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the vision model: {exc}", file=vision,
                         fix="pass a CLIPModel / SiglipModel directory or id, or an open_clip plain ViT") from exc
    finally:
        if scratch is not None:  # the weights are in memory now
            shutil.rmtree(scratch, ignore_errors=True)
    config = getattr(model.config, "vision_config", model.config)
    kind = str(getattr(config, "model_type", ""))
    if kind not in ("clip_vision_model", "siglip_vision_model"):
        raise InputError(f"unsupported vision tower {type(model).__name__} ({kind})", file=vision,
                         fix="use a CLIP or SigLIP checkpoint")
    return model.vision_model, config, image_processor, "clip" if kind.startswith("clip") else "siglip"


def vision_tower(model: Any) -> Any:
    """The module of a LLaVA model holding the tower's weights (transformers 5 flattens `...VisionModel`)."""
    tower = model.model.vision_tower
    return getattr(tower, "vision_model", tower)


def _resize_positions(state: dict[str, Any], kind: str, old: int, new: int, patch: int) -> None:
    """Bicubic interpolation of the position embeddings from an old to a new grid (class token kept)."""
    import torch
    import torch.nn.functional as F

    key = "embeddings.position_embedding.weight"
    table = state[key]
    lead = table[:1] if kind == "clip" else table[:0]
    grid = table[1:] if kind == "clip" else table
    g_old, g_new = old // patch, new // patch
    grid = grid.reshape(1, g_old, g_old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(g_new, g_new), mode="bicubic", align_corners=False)
    state[key] = torch.cat([lead, grid.permute(0, 2, 3, 1).reshape(g_new * g_new, -1).to(table.dtype)])
    state.pop("embeddings.position_ids", None)


def assemble_llava(
    vision: str | Path,
    language: str | Path,
    output: str | Path,
    *,
    projector: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    image_size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build, save and return a LLaVA model on the given vision tower and language model (see module doc).

    The output is written beside `output` and swapped in, with `assembly.json` (the lineage) as its marker;
    an existing non-empty `output` is replaced only with `overwrite` and only when it is an earlier
    assembly, never one of the two input models.
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from pathenhanceds.atomic import atomic_output_dir, check_output, marker_fields
    from pathinsight_models.clip.zeroshot import local_inputs
    from pathinsight_models.families import LLAVA_TEMPLATE

    if projector not in PROJECTORS:
        raise InputError(f"unknown projector {projector!r}",
                         fix=f"use {', '.join(PROJECTORS)} (LlavaForConditionalGeneration's projector)")
    protected = local_inputs(vision, language)
    check_output(output, overwrite=overwrite, kind="assembled", protected=protected)  # before loading models
    tower, vcfg, image_processor, kind = _load_vision(str(vision))
    n_layers = vcfg.num_hidden_layers
    if not (-n_layers <= vision_feature_layer < n_layers + 1) or vision_feature_layer == 0:
        raise InputError(f"vision_feature_layer {vision_feature_layer} outside the tower's {n_layers} layers",
                         fix="use -1 (last) or -2 (LLaVA-1.5)")
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(language))
        tok = AutoTokenizer.from_pretrained(str(language))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the language model: {exc}", file=str(language)) from exc
    old_size, patch = vcfg.image_size, vcfg.patch_size
    size = image_size or old_size
    if size % patch:
        raise InputError(f"image_size {size} is not a multiple of the tower's patch size {patch}",
                         fix=f"use a multiple of {patch}")
    state = {k: v.detach().clone() for k, v in tower.state_dict().items()}
    if size != old_size:
        _resize_positions(state, kind, old_size, size, patch)
    vcfg = vcfg.__class__(**{**vcfg.to_dict(), "image_size": size})

    torch.manual_seed(seed)
    added = []
    if IMAGE_TOKEN not in tok.get_vocab():
        added.append(IMAGE_TOKEN)
    specials: dict[str, Any] = {"additional_special_tokens": added} if added else {}
    if tok.pad_token is None:
        specials["pad_token"] = "<pad>"
    if specials:
        tok.add_special_tokens(specials)
        lm.resize_token_embeddings(len(tok))
    strategy = "default" if kind == "clip" else "full"
    extra = 1 if kind == "clip" else 0  # CLIP's class token is dropped by the `default` strategy
    n_tokens = (size // patch) ** 2
    text_config = lm.config
    text_config.pad_token_id = tok.pad_token_id
    config = LlavaConfig(
        vision_config=vcfg, text_config=text_config, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu", vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=strategy, image_seq_length=n_tokens, multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    model = LlavaForConditionalGeneration(config)
    vision_tower(model).load_state_dict(state, strict=True)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id

    if kind == "clip":
        image_processor.size = {"shortest_edge": size}
        image_processor.crop_size = {"height": size, "width": size}
    else:
        image_processor.size = {"height": size, "width": size}
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                               vision_feature_select_strategy=strategy, num_additional_image_tokens=extra,
                               chat_template=LLAVA_TEMPLATE, image_token=IMAGE_TOKEN)
    lineage = {"vision": str(vision), "language": str(language), "projector": projector,
               "vision_feature_layer": vision_feature_layer, "vision_feature_select_strategy": strategy,
               "num_additional_image_tokens": extra, "image_size": size, "image_seq_length": n_tokens,
               "seed": seed, "added_tokens": sorted({*added, *(["<pad>"] if "pad_token" in specials else [])})}
    out = Path(output)
    with atomic_output_dir(out, overwrite=overwrite, kind="assembled", protected=protected) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "assembly.json").write_text(json.dumps({**marker_fields("assembled"), **lineage}, indent=2),
                                           encoding="utf-8")
        (tmp / "README.md").write_text(_card(lineage), encoding="utf-8")
    return out


def _card(lineage: dict[str, Any]) -> str:
    import yaml

    bases = [b for b in (lineage["vision"], lineage["language"]) if not Path(b).exists()]
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "image-text-to-text",
                            "tags": ["pathology", "llava", "pathinsight"]}
    if bases:
        meta["base_model"] = [b.removeprefix("hf-hub:") for b in bases]
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# Assembled LLaVA (untrained projector)\n\n"
            f"Vision tower `{lineage['vision']}` + language model `{lineage['language']}`, projector "
            f"{lineage['projector']} (random init), features from layer {lineage['vision_feature_layer']}, "
            f"{lineage['image_size']} px, {lineage['image_seq_length']} image tokens. Train stage 1 (projector "
            "alignment) before use: `pathinsight train --config recipes/pathclip_vicuna_stage1.yaml`.\n")
