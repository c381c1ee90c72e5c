"""Tiny, randomly initialised VLMs of the real `transformers` architectures, built fully offline.

Used by tests, demos and smoke runs: each factory trains a small byte-level BPE tokenizer on a fixed
in-code corpus, wraps it in the family's real processor class and instantiates the family's real
`...ForConditionalGeneration` class from a shrunken config. The saved directory loads with
`AutoModelForImageTextToText.from_pretrained(dir)` and `AutoProcessor.from_pretrained(dir)`.

The factories (`llava`, `qwen2_5_vl`, `qwen2_vl`, `idefics3`, `smolvlm`) hang off their family in the
registry (`families.Family.tiny`); `build_tiny_model(name)` looks the family up there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

# Fixed corpus: chat-template words, pathology vocabulary, short answers. Changing it changes every
# tiny tokenizer, so treat it as frozen.
_CORPUS = [
    "system user assistant System User Assistant You are a helpful assistant.",
    "Describe the histopathology image. What is shown in this image? Answer with yes or no.",
    "What type of tissue is shown? Which class best describes this patch? Is this tissue malignant?",
    "The image shows a hematoxylin and eosin (H&E) stained section of colon tissue.",
    "adipose background debris lymphocytes mucus smooth muscle normal colon mucosa",
    "cancer-associated stroma colorectal adenocarcinoma epithelium tumor necrosis",
    "benign malignant carcinoma adenocarcinoma squamous cell carcinoma metastasis",
    "breast lung liver kidney prostate bladder skin lymph node stomach pancreas",
    "nuclei nucleus cytoplasm mitosis mitotic figures pleomorphism atypia glands stroma",
    "inflammation fibrosis hyperplasia dysplasia invasive in situ grade low high",
    "low grade high grade urothelial carcinoma papillary non-invasive invasive",
    "yes no Yes No true false The answer is yes. The answer is no.",
    "The section shows crowded glands with enlarged, hyperchromatic nuclei.",
    "Scattered lymphocytes infiltrate the fibrous stroma around the tumor nests.",
    "Microscopy reveals a well-differentiated tumor with preserved architecture.",
    "a an the of in on with and or is are was were this that these those there",
    "0 1 2 3 4 5 6 7 8 9 10 20 100 % . , ; : ? ! ( ) [ ] - / ' \"",
]


@dataclass(frozen=True)
class TinySpec:
    """Size knobs shared by all tiny factories (kept small so CPU tests take seconds)."""

    hidden_size: int = 32
    num_layers: int = 1
    num_heads: int = 2
    intermediate_size: int = 64
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_intermediate_size: int = 64
    image_size: int = 32
    patch_size: int = 8
    vocab_size: int = 512


def spread_weights(model: Any, seed: int = 0, std: float = 0.1) -> Any:
    """Re-draw every weight matrix from N(0, std^2), seeded: at the default init (std 0.02) a tiny random
    model gives the same answer whatever the input, which would make comparisons of outputs trivial."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return model


def train_byte_bpe(corpus: Iterable[str], special_tokens: list[str], vocab_size: int, *,
                   lowercase: bool = False) -> Any:
    """A `tokenizers` byte-level BPE trained on `corpus` (after NFC + lower-casing with `lowercase`).

    Byte-level so any text encodes without unknown tokens; special tokens are added first so their
    ids are stable across runs.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    if lowercase:
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def build_tokenizer(
    special_tokens: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None = None,
    vocab_size: int = 512,
    extra: dict[str, str] | None = None,
) -> Any:
    """Train a byte-level BPE on `_CORPUS` (`train_byte_bpe`) and wrap it as a fast `transformers` tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = train_byte_bpe(_CORPUS, special_tokens, vocab_size)
    named = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk}
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        **{k: v for k, v in named.items() if v is not None},
        **(extra or {}),
    )
    # Mark every family token as special so `skip_special_tokens` drops them when decoding.
    wrapped.add_special_tokens({"additional_special_tokens": [t for t in special_tokens if t not in named.values()]})
    return wrapped


# ---------------------------------------------------------------- llava (LLaVA-1.5-hf layout)


def llava(spec: TinySpec) -> tuple[Any, Any]:
    """Tiny LLaVA-1.5-hf: CLIP vision tower, two-layer projector, Llama text model."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from pathinsight_models.families import get_family

    tok = build_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>",
                          unk="<unk>", vocab_size=spec.vocab_size)
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.num_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden_size,
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    num_patches = (spec.image_size // spec.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=num_patches,
        vision_feature_layer=-2 if spec.vision_layers >= 2 else -1,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=get_family("llava").chat_template,
    )
    return model, processor


# ---------------------------------------------------------------- qwen2_5_vl / qwen2_vl


_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen(spec: TinySpec, version: str) -> tuple[Any, Any]:
    """Tiny Qwen2-VL (`version` "2") or Qwen2.5-VL ("2.5") with the checkpoints' chat template."""
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from pathinsight_models.families import trl_template

    prefix = "Qwen2_5_VL" if version == "2.5" else "Qwen2VL"
    Config = getattr(transformers, f"{prefix}Config")
    Model = getattr(transformers, f"{prefix}ForConditionalGeneration")
    Processor = getattr(transformers, f"{prefix}Processor")
    template = trl_template("qwen2_5_vl")  # the checkpoints' own template (Qwen2-VL's is byte-identical)

    tok = build_tokenizer(_QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          vocab_size=spec.vocab_size)
    head_dim = spec.hidden_size // spec.num_heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]  # temporal, height, width; sums to head_dim/2
    text = {
        "vocab_size": len(tok),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_heads,
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision: dict[str, Any] = {
        "depth": spec.vision_layers,
        "num_heads": spec.num_heads,
        "patch_size": spec.patch_size // 2,  # the 2x2 spatial merge restores the llava-sized grid
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if version == "2.5":
        vision |= {
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "out_hidden_size": spec.hidden_size,
            "window_size": spec.image_size,
            "fullatt_block_indexes": [spec.vision_layers - 1],
        }
    else:
        vision |= {"embed_dim": spec.vision_hidden_size, "hidden_size": spec.hidden_size, "mlp_ratio": 2}
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    config = Config(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Model(config)
    pixels = spec.image_size * spec.image_size
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": pixels // 4, "longest_edge": pixels},
        patch_size=spec.patch_size // 2,
        merge_size=2,
        temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": pixels // 4, "longest_edge": pixels * 4},
        patch_size=spec.patch_size // 2,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = Processor(
        image_processor=image_processor, tokenizer=tok, video_processor=video_processor, chat_template=template
    )
    return model, processor


# ---------------------------------------------------------------- idefics3 / smolvlm


def _idefics3(spec: TinySpec, flavour: str = "idefics3") -> tuple[Any, Any]:
    """Tiny Idefics3 or SmolVLM (`flavour`): SigLIP vision model, pixel-shuffle connector, Llama."""
    import transformers

    from pathinsight_models.families import trl_template

    prefix = "Idefics3" if flavour == "idefics3" else "SmolVLM"
    Config = getattr(transformers, f"{prefix}Config")
    Model = getattr(transformers, f"{prefix}ForConditionalGeneration")
    ImageProcessor = getattr(transformers, f"{prefix}ImageProcessor")
    Processor = getattr(transformers, f"{prefix}Processor")
    template = trl_template(flavour)  # the checkpoints' own template (no generation markers)
    bos = "<|begin_of_text|>" if flavour == "idefics3" else "<|im_start|>"
    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    specials = [bos, "<|end_of_text|>", "<pad>", "<image>", "<fake_token_around_image>", "<global-img>",
                "<end_of_utterance>", *grid]
    tok = build_tokenizer(specials, bos=bos, eos="<end_of_utterance>", pad="<pad>", vocab_size=spec.vocab_size)
    scale = 2
    image_seq_len = (spec.image_size // spec.patch_size) ** 2 // scale**2
    text = {
        "model_type": "llama",
        "vocab_size": len(tok),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_heads,
        "max_position_embeddings": 2048,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = {
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.num_heads,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
    }
    config = Config(
        text_config=text,
        vision_config=vision,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    model = Model(config)
    image_processor = ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": spec.image_size},
        max_image_size={"longest_edge": spec.image_size},
    )
    extra: dict[str, Any] = {}
    if flavour == "smolvlm":
        extra["video_processor"] = transformers.SmolVLMVideoProcessor(
            do_image_splitting=False,
            size={"longest_edge": spec.image_size},
            max_image_size={"longest_edge": spec.image_size},
        )
    processor = Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=image_seq_len,
                          chat_template=template, **extra)
    return model, processor


def qwen2_5_vl(spec: TinySpec) -> tuple[Any, Any]:
    """Tiny Qwen2.5-VL."""
    return _qwen(spec, "2.5")


def qwen2_vl(spec: TinySpec) -> tuple[Any, Any]:
    """Tiny Qwen2-VL."""
    return _qwen(spec, "2")


def idefics3(spec: TinySpec) -> tuple[Any, Any]:
    """Tiny Idefics3."""
    return _idefics3(spec, "idefics3")


def smolvlm(spec: TinySpec) -> tuple[Any, Any]:
    """Tiny SmolVLM (Idefics3's architecture; its processor needs the extra `num2words` package)."""
    return _idefics3(spec, "smolvlm")


def build_tiny_model(family: str, seed: int = 0, **spec_overrides: Any) -> tuple[Any, Any]:
    """Return `(model, processor)` of a tiny random model of `family` (seeded)."""
    import torch

    from pathinsight_models.families import FAMILIES, tiny_families

    factory = FAMILIES.get(family).tiny if family in FAMILIES else None
    if factory is None:
        raise InputError(f"no tiny factory for family {family!r}", fix=f"use one of: {', '.join(tiny_families())}")
    spec = TinySpec(**spec_overrides)
    if spec.image_size % spec.patch_size or (spec.image_size // spec.patch_size) % 2:
        raise InputError(
            f"image_size {spec.image_size} must be an even multiple of patch_size {spec.patch_size}",
            fix="e.g. --image-size 32 --patch-size 8",
        )
    torch.manual_seed(seed)
    try:
        model, processor = factory(spec)
    except ImportError as exc:
        raise InputError(f"cannot build the tiny {family} model: {exc}", fix="install the package named above") from exc
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    return model.eval(), processor


def save_tiny_model(family: str, output_dir: str | Path, seed: int = 0, **spec_overrides: Any) -> Path:
    """Build a tiny model of `family` and save model + processor (with chat template) to `output_dir`."""
    out = Path(output_dir)
    model, processor = build_tiny_model(family, seed=seed, **spec_overrides)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
