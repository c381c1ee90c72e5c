"""Family registry: module layout and LoRA scopes checked against the installed transformers classes."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.utils.chat_template_utils import render_jinja_template

from pathenhanceds.errors import InputError
from pathenhanceds.schema import make_messages
from pathinsight_models.families import FAMILIES, LORA_TARGET_SETS, detect_family, get_family, tiny_families
from pathinsight_models.tiny import build_tiny_model
from pathinsight_models.training.data import to_chat_messages

_LLAMA = dict(model_type="llama", vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
              num_attention_heads=2, num_key_value_heads=2)
_CLIP = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=2, image_size=32, patch_size=8)
# Families without a tiny factory here (their processors need extra packages or Hub-only files):
# the architecture alone is instantiated on the meta device, which is enough to check module names.
_META_CONFIGS = {
    "llava_next": dict(model_type="llava_next", text_config=_LLAMA, vision_config=_CLIP,
                       image_grid_pinpoints=[[32, 32]]),
    "internvl": dict(model_type="internvl", text_config=dict(_LLAMA, model_type="qwen2"),
                     vision_config=dict(model_type="internvl_vision", hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, image_size=[32, 32],
                                        patch_size=[8, 8])),
    "gemma3": dict(model_type="gemma3",
                   text_config=dict(model_type="gemma3_text", vocab_size=128, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16),
                   vision_config=dict(_CLIP, model_type="siglip_vision_model", num_hidden_layers=1),
                   mm_tokens_per_image=4),
    "smolvlm": dict(model_type="smolvlm", text_config=_LLAMA,
                    vision_config=dict(model_type="smolvlm_vision", hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)),
}
_REAL = ["llava", "qwen2_vl", "qwen2_5_vl", "idefics3"]


def _model(name: str):
    if name in _META_CONFIGS:
        config = AutoConfig.for_model(**_META_CONFIGS[name])
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config)
    return build_tiny_model(name)[0]


def test_registry_covers_the_issue_families():
    assert {"llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "internvl", "idefics3", "smolvlm", "gemma3"} <= set(
        FAMILIES
    )
    assert set(_REAL) <= set(tiny_families())
    assert set(_META_CONFIGS) | set(_REAL) == set(FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_layout_matches_the_installed_transformers_class(name):
    family = get_family(name)
    model = _model(name)
    assert type(model).__name__ == family.model_class
    assert detect_family(model.config) is family

    params = dict(model.named_parameters())
    owners = {n: family.component_of(n) for n in params}
    assert [n for n, c in owners.items() if c is None] == []
    for component in ("vision_tower", "projector", "language_model"):
        assert any(c == component for c in owners.values()), component
    # Every declared prefix exists (as a module or a bare parameter).
    modules = dict(model.named_modules())
    for prefix in (*family.vision_tower, *family.projector, *family.language_model):
        assert prefix in modules or prefix in params, prefix

    linears = {n for n, m in modules.items() if isinstance(m, torch.nn.Linear)}
    covered: set[str] = set()
    for component in family.lora:
        pattern = re.compile(family.lora_regex([component]))
        hits = {n for n in modules if pattern.fullmatch(n)}
        assert hits, component
        assert hits <= linears  # LoRA only on Linear layers ...
        assert {family.component_of(h) for h in hits} == {component}  # ... of that component only
        covered |= hits
    # all_linear = every Linear except the output head.
    assert linears - covered == {"lm_head"}
    all_linear = re.compile(family.lora_regex(family.lora_components("all_linear")))
    assert {n for n in modules if all_linear.fullmatch(n)} == covered


def test_target_sets_name_components():
    family = get_family("qwen2_5_vl")
    assert family.lora_components("language") == ("language_model",)
    assert family.lora_components("vision_language") == ("vision_tower", "language_model")
    assert family.lora_components("all_linear") == ("vision_tower", "projector", "language_model")
    assert set(LORA_TARGET_SETS) == {"language", "vision_language", "all_linear"}
    # Qwen's projector lives inside `model.visual` but is not part of the vision tower.
    assert family.component_of("model.visual.merger.mlp.0.weight") == "projector"
    assert family.component_of("base_model.model.model.visual.blocks.0.attn.qkv.lora_A.default.weight") == (
        "vision_tower"
    )
    with pytest.raises(InputError, match="no Linear layers"):
        get_family("gemma3").lora_regex(["projector"])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_chat_template_marks_exactly_the_assistant_turns(name):
    family = get_family(name)
    assert "{% generation %}" in family.chat_template or "{%- generation -%}" in family.chat_template
    if family.template.startswith("trl:"):
        from trl import chat_template_utils

        shipped = getattr(chat_template_utils, family.template[4:] + "_chat_template")
        assert family.chat_template == shipped
    messages = to_chat_messages(make_messages([
        ("user", "What tissue is shown?"), ("assistant", "Colon mucosa."),
        ("user", "Is it malignant?"), ("assistant", "No, it is benign."),
        ("user", "Which grade?"), ("assistant", "Not applicable."),
    ]))
    rendered, spans = render_jinja_template(
        conversations=[messages], chat_template=family.chat_template, return_assistant_tokens_mask=True,
        bos_token="<s>", eos_token="</s>",
    )
    text = rendered[0]
    pieces = [text[start:end] for start, end in spans[0]]
    assert len(pieces) == 3
    for piece, answer in zip(pieces, ["Colon mucosa.", "No, it is benign.", "Not applicable."], strict=True):
        assert answer in piece
        assert "tissue" not in piece and "malignant" not in piece and "grade" not in piece
    assert "None" not in text


def test_detect_family_from_dict_dir_and_errors(tmp_path):
    assert detect_family({"model_type": "qwen2_5_vl"}).name == "qwen2_5_vl"
    model, processor = build_tiny_model("idefics3")
    model.save_pretrained(tmp_path / "m")
    assert detect_family(tmp_path / "m").name == "idefics3"

    with pytest.raises(InputError) as err:
        detect_family({"model_type": "blip-2"})
    assert "llava" in str(err.value) and "qwen2_5_vl" in str(err.value) and "gemma3" in str(err.value)
    with pytest.raises(InputError, match="supported families"):
        get_family("internlm_xcomposer2")

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({
        "model_type": "internlmxcomposer2",
        "auto_map": {"AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config"},
    }))
    with pytest.raises(InputError, match="trust_remote_code"):
        detect_family(remote)
