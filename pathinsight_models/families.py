"""Registry of native `transformers` VLM families: module layout, LoRA target sets, chat templates.

Module names are those of the `...ForConditionalGeneration` classes of transformers 5.x, where the
multimodal backbone is nested under `model.` (e.g. `model.vision_tower`, `model.multi_modal_projector`,
`model.language_model`) and `lm_head` sits at the top. Every parameter of a model belongs to exactly
one component (vision tower, projector, language model), chosen by the longest matching prefix, so
Qwen's `model.visual.merger` counts as projector although it lives inside `model.visual`.

`FAMILIES` is a `Registry` (`get_family`, `list_families`); a family's `tiny` factory (in `tiny.py`)
builds a small random model of it for tests and demos (`tiny_families()` lists those that have one).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.registry import Registry

from . import tiny

COMPONENTS = ("vision_tower", "projector", "language_model")
LORA_TARGET_SETS = ("language", "vision_language", "all_linear")

_LLM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_VIT_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")  # CLIP / SigLIP / Idefics3

# LLaVA-1.5 (Vicuna v1) format. The llava-hf template marks assistant text but leaves out the end of
# turn, so a model trained on it never learns to stop; here `</s>` is inside the generation block
# (as in the original LLaVA training data) and the space after "ASSISTANT:" is part of the answer so
# training and the `add_generation_prompt` prefix tokenize the same way.
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% else %}{{ 'ASSISTANT:' }}{% generation %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ ' ' + content['text'] }}{% endfor %}"
    "{{ eos_token }}{% endgeneration %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# InternVL-hf (ChatML) format as written by transformers' conversion script, with generation markers
# around the assistant content and its `<|im_end|>`.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endgeneration %}"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@cache
def trl_template(name: str) -> str:
    """A chat template shipped by TRL (`trl/chat_templates/<name>.jinja`), read without importing trl."""
    spec = importlib.util.find_spec("trl")
    if spec is None or spec.origin is None:
        raise InputError("TRL is not installed", fix="pip install trl")
    return (Path(spec.origin).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


@dataclass(frozen=True)
class LoraScope:
    """Linear layers of one component that LoRA may adapt: `<scope>.(...).<leaf>`."""

    scope: str
    leaves: tuple[str, ...]

    def pattern(self) -> str:
        """Regex (full match) of the module names this scope adapts, in both model layouts.

        The leading `model.` is optional: a saved adapter then also loads onto the bare `*Model`
        (`AutoModel.from_pretrained(adapter_repo)`), whose modules have no `model.` prefix.
        """
        leaves = "|".join(re.escape(leaf) for leaf in self.leaves)
        head, rest = split_layout_prefix(self.scope)
        optional = f"(?:{re.escape(head)})?" if head else ""
        return rf"{optional}{re.escape(rest)}\.(?:.*\.)?(?:{leaves})"


# `*ForConditionalGeneration` nests the multimodal backbone under `model.`; the bare `*Model` has none.
LAYOUT_PREFIX = "model."


def split_layout_prefix(name: str) -> tuple[str, str]:
    """(`model.` or "", rest): the part of a module name that only the `*ForConditionalGeneration` layout has."""
    return (LAYOUT_PREFIX, name[len(LAYOUT_PREFIX):]) if name.startswith(LAYOUT_PREFIX) else ("", name)


def layout_free(name: str) -> str:
    """`name` without the `model.` prefix: a PEFT `modules_to_save` entry (suffix match) for both layouts."""
    return split_layout_prefix(name)[1]


@dataclass(frozen=True)
class Family:
    """One VLM architecture: its transformers class, module layout, LoRA scopes, chat template, tiny factory."""

    name: str
    model_types: tuple[str, ...]
    model_class: str
    examples: tuple[str, ...]
    vision_tower: tuple[str, ...]
    projector: tuple[str, ...]
    language_model: tuple[str, ...]
    lora: dict[str, LoraScope]  # component -> scope; the projector may have none (no Linear layers)
    template: str  # "trl:<name>" or an inline Jinja template
    processor_settings: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    # `tiny.TinySpec -> (model, processor)`: a small random model of this family (None: no factory)
    tiny: Callable[[Any], tuple[Any, Any]] | None = None

    @property
    def chat_template(self) -> str:
        """Training chat template with `{% generation %}` markers."""
        if self.template.startswith("trl:"):
            return trl_template(self.template[4:])
        return self.template

    def prefixes(self) -> dict[str, tuple[str, ...]]:
        """Component -> module-name prefixes."""
        return {"vision_tower": self.vision_tower, "projector": self.projector, "language_model": self.language_model}

    def component_of(self, name: str) -> str | None:
        """Component owning parameter/module `name` (PEFT wrapper prefixes are ignored)."""
        name = _strip_peft(name)
        best, best_len = None, -1
        for component, prefixes in self.prefixes().items():
            for prefix in prefixes:
                if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                    best, best_len = component, len(prefix)
        return best

    def lora_components(self, target_set: str) -> tuple[str, ...]:
        """Components a LoRA target set (`language`, `vision_language`, `all_linear`) adapts."""
        if target_set == "language":
            return ("language_model",)
        if target_set == "vision_language":
            return ("vision_tower", "language_model")
        if target_set == "all_linear":
            return tuple(c for c in COMPONENTS if c in self.lora)
        raise InputError(f"unknown LoRA target set {target_set!r}", fix=f"use one of: {', '.join(LORA_TARGET_SETS)}")

    def lora_regex(self, components: tuple[str, ...] | list[str]) -> str:
        """PEFT `target_modules` regex (full match on module names) for the given components."""
        missing = [c for c in components if c not in self.lora]
        if missing:
            raise InputError(
                f"family {self.name!r} has no Linear layers LoRA can adapt in {missing}",
                fix="train that component fully instead (tune_* flag under LoRA uses modules_to_save)",
            )
        if not components:
            raise InputError("LoRA needs at least one component to adapt",
                             fix="set tune_language_model or tune_vision_tower to true")
        return "^(?:" + "|".join(self.lora[c].pattern() for c in components) + ")$"


def _strip_peft(name: str) -> str:
    for prefix in ("base_model.model.", "module."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


_LLAVA_LIKE = dict(
    vision_tower=("model.vision_tower",),
    projector=("model.multi_modal_projector",),
    language_model=("model.language_model", "lm_head"),
)

# Qwen2-VL and Qwen2.5-VL share one layout: a ViT (`visual`) whose merger is the projector, a Qwen2 text model.
_QWEN_LIKE = dict(
    vision_tower=("model.visual",),
    projector=("model.visual.merger",),
    language_model=("model.language_model", "lm_head"),
)

# Idefics3 and SmolVLM share one layout: SigLIP vision model, pixel-shuffle connector, Llama text model.
_IDEFICS_LIKE = dict(
    vision_tower=("model.vision_model",),
    projector=("model.connector",),
    language_model=("model.text_model", "lm_head"),
    lora={
        "vision_tower": LoraScope("model.vision_model", _VIT_LINEARS),
        "projector": LoraScope("model.connector", ("proj",)),
        "language_model": LoraScope("model.text_model", _LLM_LINEARS),
    },
)

FAMILIES: Registry[Family] = Registry("model family", fix="supported families: {names}")
for _family in (
    Family(
        name="llava",
        model_types=("llava",),
        model_class="LlavaForConditionalGeneration",
        examples=("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf"),
        **_LLAVA_LIKE,
        lora={
            "vision_tower": LoraScope("model.vision_tower", _VIT_LINEARS),
            "projector": LoraScope("model.multi_modal_projector", ("linear_1", "linear_2")),
            "language_model": LoraScope("model.language_model", _LLM_LINEARS),
        },
        template=LLAVA_TEMPLATE,
        processor_settings={},  # fixed 336x336 CLIP input, 576 image tokens
        tiny=tiny.llava,
    ),
    Family(
        name="llava_next",
        model_types=("llava_next",),
        model_class="LlavaNextForConditionalGeneration",
        examples=("llava-hf/llava-v1.6-mistral-7b-hf",),
        vision_tower=("model.vision_tower",),
        projector=("model.multi_modal_projector", "model.image_newline"),
        language_model=("model.language_model", "lm_head"),
        lora={
            "vision_tower": LoraScope("model.vision_tower", _VIT_LINEARS),
            "projector": LoraScope("model.multi_modal_projector", ("linear_1", "linear_2")),
            "language_model": LoraScope("model.language_model", _LLM_LINEARS),
        },
        template="trl:llava_next_training",
        # Pathology patches are small: a single 336px grid keeps the sequence short.
        processor_settings={"image_grid_pinpoints": [[336, 336]]},
        notes="`model.image_newline` is a bare parameter: trained under full FT only, not by modules_to_save.",
    ),
    Family(
        name="qwen2_vl",
        model_types=("qwen2_vl",),
        model_class="Qwen2VLForConditionalGeneration",
        examples=("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"),
        **_QWEN_LIKE,
        lora={
            "vision_tower": LoraScope("model.visual.blocks", ("qkv", "proj", "fc1", "fc2")),
            "projector": LoraScope("model.visual.merger", ("mlp.0", "mlp.2")),
            "language_model": LoraScope("model.language_model", _LLM_LINEARS),
        },
        template="trl:qwen2_5_vl_training",  # Qwen2-VL ships a byte-identical template
        processor_settings={"size": {"shortest_edge": 56 * 56, "longest_edge": 448 * 448}},
        tiny=tiny.qwen2_vl,
    ),
    Family(
        name="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        model_class="Qwen2_5_VLForConditionalGeneration",
        examples=("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"),
        **_QWEN_LIKE,
        lora={
            "vision_tower": LoraScope("model.visual.blocks", ("qkv", "proj", "gate_proj", "up_proj", "down_proj")),
            "projector": LoraScope("model.visual.merger", ("mlp.0", "mlp.2")),
            "language_model": LoraScope("model.language_model", _LLM_LINEARS),
        },
        template="trl:qwen2_5_vl_training",
        # min/max pixels: <= 256 visual tokens per 448x448 patch.
        processor_settings={"size": {"shortest_edge": 56 * 56, "longest_edge": 448 * 448}},
        tiny=tiny.qwen2_5_vl,
    ),
    Family(
        name="internvl",
        model_types=("internvl",),
        model_class="InternVLForConditionalGeneration",
        examples=("OpenGVLab/InternVL3-1B-hf", "OpenGVLab/InternVL3-8B-hf"),
        **_LLAVA_LIKE,
        lora={
            "vision_tower": LoraScope(
                "model.vision_tower", ("q_proj", "k_proj", "v_proj", "projection_layer", "fc1", "fc2")
            ),
            "projector": LoraScope("model.multi_modal_projector", ("linear_1", "linear_2")),
            "language_model": LoraScope("model.language_model", _LLM_LINEARS),
        },
        template=INTERNVL_TEMPLATE,
        processor_settings={"crop_to_patches": False},  # one 448px tile, 256 tokens
    ),
    Family(
        name="idefics3",
        model_types=("idefics3",),
        model_class="Idefics3ForConditionalGeneration",
        examples=("HuggingFaceM4/Idefics3-8B-Llama3",),
        **_IDEFICS_LIKE,
        template="trl:idefics3_training",
        processor_settings={"do_image_splitting": False},
        tiny=tiny.idefics3,
    ),
    Family(
        name="smolvlm",
        model_types=("smolvlm",),
        model_class="SmolVLMForConditionalGeneration",
        examples=("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM2-2.2B-Instruct"),
        **_IDEFICS_LIKE,
        template="trl:smolvlm_training",
        processor_settings={"do_image_splitting": False},
        tiny=tiny.smolvlm,
    ),
    Family(
        name="gemma3",
        model_types=("gemma3",),
        model_class="Gemma3ForConditionalGeneration",
        examples=("google/gemma-3-4b-it",),
        **_LLAVA_LIKE,
        lora={
            "vision_tower": LoraScope("model.vision_tower", _VIT_LINEARS),
            "language_model": LoraScope("model.language_model", _LLM_LINEARS),
        },
        template="trl:gemma3_training",
        processor_settings={"do_pan_and_scan": False},
        notes="The projector has no Linear layer (a bare weight matrix); under LoRA it is trained via modules_to_save.",
    ),
):
    FAMILIES.register(_family.name, _family)


_BY_MODEL_TYPE = {mt: f for f in FAMILIES.values() for mt in f.model_types}


def supported() -> str:
    """The family names, comma-separated (for error messages)."""
    return ", ".join(FAMILIES.names())


def list_families() -> list[str]:
    """Every registered family name, sorted."""
    return FAMILIES.names()


def tiny_families() -> list[str]:
    """Families with a tiny random-model factory (`pathinsight models tiny --family ...`)."""
    return [f.name for f in FAMILIES.values() if f.tiny is not None]


def get_family(name: str) -> Family:
    """Family by registry name (e.g. `llava`, `qwen2_5_vl`); unknown names name the closest family."""
    return FAMILIES.get(name)


def detect_family(config: Any, *, trust_remote_code: bool = False) -> Family:
    """Family of a model from its config (a `PretrainedConfig`, a config dict, or a model dir / Hub id)."""
    if isinstance(config, (str, Path)):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(config), trust_remote_code=trust_remote_code)
        except ValueError as exc:
            if "trust_remote_code" in str(exc) and not trust_remote_code:
                raise InputError(
                    f"{config} needs custom code from its repository (trust_remote_code)",
                    fix="use a native transformers model (e.g. Qwen2.5-VL or InternVL-hf) or set "
                    "`trust_remote_code: true` in the recipe if you trust that code",
                ) from exc
            raise
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    family = _BY_MODEL_TYPE.get(model_type or "")
    if family is None:
        raise InputError(
            f"unsupported model type {model_type!r}",
            fix=f"supported families: {supported()} (or set `family:` in the recipe if the module layout matches)",
        )
    return family
