"""open_clip models: loading (see `zeroshot.OpenClipEncoder`) and conversion to `transformers` CLIP.

We train open_clip models through conversion: `convert_open_clip` maps an open_clip `CLIP` with a plain
ViT image tower and the OpenAI-style text transformer onto `transformers.CLIPModel` weight for weight
(fused attention `in_proj` split into q/k/v, `proj` matrices transposed into Linear layers), with a
`CLIPTokenizer` built from the model's own BPE vocabulary and a `CLIPImageProcessor` from its
preprocessing config. Outputs match to float rounding (tested to 1e-6 on a random tiny model).

Covered: open_clip `CLIP` models whose `vision_cfg` is a plain ViT (class-token pooling, `ln_pre`,
no attentional pooler, no timm trunk, no layer scale) and whose text tower is open_clip's own
transformer (causal mask, arg-max/EOT pooling, no HF text model) — e.g. the OpenAI/LAION `ViT-B-32`,
`ViT-B-16`, `ViT-L-14` families with or without QuickGELU, QuiltNet-B-32/B-16, PathGen-CLIP (ViT-B-16,
QuickGELU) and PathGen-CLIP-L. Not covered (refused with the reason): CONCH (CoCa-style with an
attentional pooler), BiomedCLIP and QuiltNet-B-16-PMB (timm ViT + PubMedBERT text), SigLIP-in-open_clip,
ConvNeXt/ResNet towers. Those remain usable for evaluation through open_clip itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_BLOCK_PAIRS = (("ln_1", "layer_norm1"), ("attn.out_proj", "self_attn.out_proj"), ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))


def _reject(reason: str) -> InputError:
    return InputError(f"not a plain-ViT open_clip CLIP: {reason}",
                      fix="evaluate it with open_clip directly (pathinsight clip eval --model hf-hub:...); "
                      "see docs/clip.md for the models the converter covers")


def _act(block: Any) -> str:
    name = type(block.mlp.gelu).__name__
    if name == "QuickGELU":
        return "quick_gelu"
    if name == "GELU" and getattr(block.mlp.gelu, "approximate", "none") == "none":
        return "gelu"
    raise _reject(f"unsupported activation {name}")


def check_plain_vit(model: Any) -> None:
    """Raise an `InputError` naming why `model` is outside what the converter covers."""
    from open_clip.model import CLIP
    from open_clip.transformer import VisionTransformer

    if type(model) is not CLIP:
        raise _reject(f"{type(model).__name__} (only open_clip.model.CLIP with its own text transformer)")
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        raise _reject(f"image tower is {type(visual).__name__}, not a VisionTransformer")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise _reject("image tower pools with an attentional pooler / not the class token")
    if getattr(model, "text_pool_type", "argmax") != "argmax" or getattr(model, "attn_mask", None) is None:
        raise _reject("text tower does not pool the EOT token under a causal mask")
    if not isinstance(model.text_projection, type(visual.proj)) or visual.proj is None:
        raise _reject("projections are not plain matrices")
    for tower in (visual.transformer, model.transformer):
        block = tower.resblocks[0]
        if type(block.ls_1).__name__ != "Identity" or type(getattr(block, "ln_attn", block.ls_1)).__name__ != "Identity":
            raise _reject("residual blocks use layer scale / extra norms")
        if not hasattr(block.attn, "in_proj_weight"):
            raise _reject("attention is not a fused nn.MultiheadAttention")


def hf_config(model: Any) -> Any:
    """The `transformers.CLIPConfig` matching a plain-ViT open_clip model."""
    from transformers import CLIPConfig

    visual = model.visual
    vblock, tblock = visual.transformer.resblocks[0], model.transformer.resblocks[0]
    vision = {
        "hidden_size": visual.class_embedding.shape[0],
        "intermediate_size": vblock.mlp.c_fc.out_features,
        "num_hidden_layers": len(visual.transformer.resblocks),
        "num_attention_heads": vblock.attn.num_heads,
        "image_size": visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size,
        "patch_size": visual.conv1.kernel_size[0],
        "hidden_act": _act(vblock),
        "layer_norm_eps": visual.ln_pre.eps,
    }
    text = {
        "vocab_size": model.token_embedding.num_embeddings,
        "hidden_size": model.token_embedding.embedding_dim,
        "intermediate_size": tblock.mlp.c_fc.out_features,
        "num_hidden_layers": len(model.transformer.resblocks),
        "num_attention_heads": tblock.attn.num_heads,
        "max_position_embeddings": model.positional_embedding.shape[0],
        "hidden_act": _act(tblock),
        "layer_norm_eps": model.ln_final.eps,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=model.text_projection.shape[1],
                      logit_scale_init_value=float(model.logit_scale.detach()))


def _map_blocks(sd: dict[str, Any], src: str, dst: str, n: int, out: dict[str, Any]) -> None:
    for i in range(n):
        s, d = f"{src}.{i}.", f"{dst}.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd.pop(f"{s}attn.in_proj_{kind}").chunk(3)
            out[f"{d}self_attn.q_proj.{kind}"], out[f"{d}self_attn.k_proj.{kind}"] = q, k
            out[f"{d}self_attn.v_proj.{kind}"] = v
            for a, b in _BLOCK_PAIRS:
                out[f"{d}{b}.{kind}"] = sd.pop(f"{s}{a}.{kind}")


def open_clip_to_transformers(model: Any) -> Any:
    """A `transformers.CLIPModel` holding exactly the weights of a plain-ViT open_clip `CLIP`."""
    from transformers import CLIPModel

    check_plain_vit(model)
    config = hf_config(model)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {
        "text_model.embeddings.token_embedding.weight": sd.pop("token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight": sd.pop("positional_embedding"),
        "text_model.final_layer_norm.weight": sd.pop("ln_final.weight"),
        "text_model.final_layer_norm.bias": sd.pop("ln_final.bias"),
        "text_projection.weight": sd.pop("text_projection").T.contiguous(),
        "vision_model.embeddings.class_embedding": sd.pop("visual.class_embedding"),
        "vision_model.embeddings.patch_embedding.weight": sd.pop("visual.conv1.weight"),
        "vision_model.embeddings.position_embedding.weight": sd.pop("visual.positional_embedding"),
        "vision_model.pre_layrnorm.weight": sd.pop("visual.ln_pre.weight"),
        "vision_model.pre_layrnorm.bias": sd.pop("visual.ln_pre.bias"),
        "vision_model.post_layernorm.weight": sd.pop("visual.ln_post.weight"),
        "vision_model.post_layernorm.bias": sd.pop("visual.ln_post.bias"),
        "visual_projection.weight": sd.pop("visual.proj").T.contiguous(),
        "logit_scale": sd.pop("logit_scale").reshape(()),
    }
    _map_blocks(sd, "transformer.resblocks", "text_model.encoder.layers", config.text_config.num_hidden_layers, out)
    _map_blocks(sd, "visual.transformer.resblocks", "vision_model.encoder.layers",
                config.vision_config.num_hidden_layers, out)
    sd.pop("attn_mask", None)
    if sd:  # anything left is a part the plain-ViT mapping does not know
        raise _reject(f"unmapped weights {sorted(sd)[:5]}")
    hf = CLIPModel(config)
    missing, unexpected = hf.load_state_dict(out, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise _reject(f"weights do not line up (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return hf.eval()


def hf_tokenizer(oc_tokenizer: Any, context_length: int) -> Any:
    """`CLIPTokenizer` with the BPE vocabulary and merges of open_clip's `SimpleTokenizer`."""
    from transformers import CLIPTokenizer

    if not hasattr(oc_tokenizer, "encoder") or not hasattr(oc_tokenizer, "bpe_ranks"):
        raise _reject(f"tokenizer {type(oc_tokenizer).__name__} is not open_clip's CLIP BPE tokenizer")
    merges = [pair for pair, _ in sorted(oc_tokenizer.bpe_ranks.items(), key=lambda kv: kv[1])]
    bos, eos = (oc_tokenizer.decoder[i] for i in oc_tokenizer.all_special_ids[:2])
    # open_clip pads with id 0; HF pads with EOS. Either way the first EOS is the pooled position.
    return CLIPTokenizer(vocab=dict(oc_tokenizer.encoder), merges=merges, model_max_length=context_length,
                         bos_token=bos, eos_token=eos, pad_token=eos, unk_token=eos)


def convert_open_clip(name: str | Path, output_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Convert an open_clip model (`hf-hub:ORG/NAME`, `local-dir:PATH` or a directory) and save a
    `transformers` CLIP directory (model, tokenizer, image processor) that loads with AutoModel/AutoProcessor.

    Written beside `output_dir` and swapped in, with `conversion.json` (source, open_clip version) as its
    marker; an existing non-empty `output_dir` is replaced only with `overwrite` and only when it is an
    earlier conversion, never the model being converted.
    """
    import open_clip
    from transformers import CLIPImageProcessor, CLIPProcessor
    from transformers.image_utils import PILImageResampling

    from pathenhanceds.atomic import atomic_output_dir, check_output, write_marker
    from pathinsight_models.clip.zeroshot import local_inputs, open_clip_spec

    protected = local_inputs(name)
    check_output(output_dir, overwrite=overwrite, kind="clip-convert", protected=protected)  # before loading
    spec = open_clip_spec(name)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec)
        oc_tokenizer = open_clip.get_tokenizer(spec)
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot load the open_clip model: {exc}", file=str(name)) from exc
    hf = open_clip_to_transformers(model)
    size = hf.config.vision_config.image_size
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    resample = PILImageResampling.BILINEAR if pp.get("interpolation") == "bilinear" else PILImageResampling.BICUBIC
    mean = pp.get("mean") or getattr(model.visual, "image_mean", None) or OPENAI_MEAN
    std = pp.get("std") or getattr(model.visual, "image_std", None) or OPENAI_STD
    # open_clip's eval transform: resize the shortest edge, centre crop, normalise (PIL vs torchvision
    # resampling may differ in the last bits; the model itself is converted exactly).
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                         image_mean=list(mean), image_std=list(std), resample=resample)
    tok = hf_tokenizer(oc_tokenizer, hf.config.text_config.max_position_embeddings)
    hf.config.text_config.bos_token_id, hf.config.text_config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    hf.config.text_config.pad_token_id = tok.pad_token_id
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tok)
    out = Path(output_dir)
    with atomic_output_dir(out, overwrite=overwrite, kind="clip-convert", protected=protected) as tmp:
        hf.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_marker(tmp, "clip-convert", source=str(name), open_clip_version=getattr(open_clip, "__version__", None))
    return out
