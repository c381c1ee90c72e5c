"""Tiny, randomly initialised `CLIPModel` / `SiglipModel` (the real classes) and a tiny causal LM, offline.

The text side uses a byte-level BPE trained locally on a fixed corpus (the project's tiny corpus, the
shipped prompt sets and texture words), lower-cased like CLIP's tokenizer, with start/end-of-text
tokens added by the tokenizer's post-processor. `CLIPModel` pools the text at the first end-of-text
token (so `eos_token_id` must be the tokenizer's), `SiglipModel` at the last position (so SigLIP text is
always padded to `max_length`, as SigLIP was trained). The saved directory loads with
`AutoModel.from_pretrained` + `AutoProcessor.from_pretrained`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

KINDS = ("clip", "siglip")
BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
# SigLIP paper initialisation: logits = t * cos + b with t = 10 (stored as log t) and b = -10.
SIGLIP_INIT_SCALE, SIGLIP_INIT_BIAS = math.log(10.0), -10.0

_CLIP_CORPUS = [
    "an h&e image of a histopathology patch showing tissue with a texture pattern",
    "stripes dots rings waves blobs cells speckle flat pale dark pink purple violet background",
    "lymph node metastasis metastatic tumor normal lymph node tissue benign",
    "synthetic case texture generated histology pattern",
]


@dataclass(frozen=True)
class TinyClipSpec:
    """Size knobs of the tiny dual encoder (the issue's probe: 2+2 layers, hidden 64, 32 px)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    text_layers: int = 2
    vision_layers: int = 2
    num_heads: int = 2
    projection_dim: int = 64
    image_size: int = 32
    patch_size: int = 8
    max_text_length: int = 48
    vocab_size: int = 1024


def _corpus() -> list[str]:
    from pathinsight_models.clip.zeroshot import PROMPT_DIR, PromptSet
    from pathinsight_models.tiny import _CORPUS

    texts = list(_CORPUS) + _CLIP_CORPUS
    for path in sorted(PROMPT_DIR.glob("*.yaml")):
        prompts = PromptSet.from_yaml(path)
        texts += prompts.templates + [s for synonyms in prompts.classes.values() for s in synonyms]
    return texts


def build_clip_tokenizer(vocab_size: int = 1024, max_length: int = 48) -> Any:
    """A lower-casing byte-level BPE that wraps every text as `<|startoftext|> ... <|endoftext|>`."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from pathinsight_models.tiny import train_byte_bpe

    tokenizer = train_byte_bpe(_corpus(), [BOS, EOS, PAD], vocab_size, lowercase=True)
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=max_length)


def build_tiny_clip(kind: str = "clip", seed: int = 0, **spec_overrides: Any) -> tuple[Any, Any]:
    """`(model, processor)`: a seeded random `CLIPModel` (+`CLIPProcessor`) or `SiglipModel` (+`SiglipProcessor`)."""
    import torch
    import transformers

    if kind not in KINDS:
        raise InputError(f"unknown tiny CLIP kind {kind!r}", fix=f"use one of: {', '.join(KINDS)}")
    spec = TinyClipSpec(**spec_overrides)
    if spec.image_size % spec.patch_size:
        raise InputError(f"image_size {spec.image_size} is not a multiple of patch_size {spec.patch_size}",
                         fix="e.g. --image-size 32 --patch-size 8")
    tok = build_clip_tokenizer(spec.vocab_size, spec.max_text_length)
    common = {"hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
              "num_attention_heads": spec.num_heads}
    text = {**common, "vocab_size": len(tok), "num_hidden_layers": spec.text_layers,
            "max_position_embeddings": spec.max_text_length, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    vision = {**common, "num_hidden_layers": spec.vision_layers, "image_size": spec.image_size,
              "patch_size": spec.patch_size}
    torch.manual_seed(seed)
    if kind == "clip":
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec.projection_dim)
        model = transformers.CLIPModel(config)
        image_processor = transformers.CLIPImageProcessor(
            size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size})
        processor = transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tok)
    else:
        # SigLIP has no separate projection: the text head maps to the vision width.
        config = transformers.SiglipConfig(text_config={**text, "projection_size": spec.hidden_size},
                                           vision_config=vision)
        model = transformers.SiglipModel(config)
        with torch.no_grad():
            model.logit_scale.fill_(SIGLIP_INIT_SCALE)
            model.logit_bias.fill_(SIGLIP_INIT_BIAS)
        image_processor = transformers.SiglipImageProcessor(size={"height": spec.image_size,
                                                                  "width": spec.image_size})
        processor = transformers.SiglipProcessor(image_processor=image_processor, tokenizer=tok)
    return model.eval(), processor


def save_tiny_clip(kind: str, output_dir: str | Path, seed: int = 0, *, overwrite: bool = False,
                   **spec_overrides: Any) -> Path:
    """Build a tiny CLIP/SigLIP and save model + processor to `output_dir` (loads with AutoModel/AutoProcessor).

    The folder is written beside the target and swapped in (`pathenhanceds.atomic`); an existing non-empty
    `output_dir` is replaced only with `overwrite` and only when it is an earlier `clip tiny` output.
    """
    from dataclasses import asdict

    from pathenhanceds.atomic import atomic_output_dir, check_output, write_marker

    out = Path(output_dir)
    check_output(out, overwrite=overwrite, kind="clip-tiny")  # before building anything
    model, processor = build_tiny_clip(kind, seed=seed, **spec_overrides)
    with atomic_output_dir(out, overwrite=overwrite, kind="clip-tiny") as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_marker(tmp, "clip-tiny", model_kind=kind, seed=seed, spec=asdict(TinyClipSpec(**spec_overrides)))
    return out


def spec_fields() -> list[tuple[str, int]]:
    """(name, default) of every size knob, for the CLI."""
    return [(f.name, f.default) for f in fields(TinyClipSpec)]


def save_tiny_lm(output_dir: str | Path, seed: int = 0, hidden_size: int = 32, num_layers: int = 1,
                 num_heads: int = 2, intermediate_size: int = 64) -> Path:
    """A tiny random `LlamaForCausalLM` + tokenizer (the project's tiny corpus), the language side of
    `pathinsight models assemble` in tests and the demo."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pathinsight_models.tiny import build_tokenizer

    tok = build_tokenizer(["<unk>", "<s>", "</s>", "<pad>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=num_heads, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
