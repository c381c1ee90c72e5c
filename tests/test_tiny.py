"""Tiny offline models: real architectures, real processors, loadable through the Auto classes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from pathenhanceds.errors import InputError
from pathenhanceds.schema import make_messages
from pathinsight_models.cli import main as cli_main
from pathinsight_models.families import detect_family, get_family
from pathinsight_models.tiny import build_tiny_model, save_tiny_model

FAMILIES = ["llava", "qwen2_5_vl", "qwen2_vl", "idefics3"]


def _conversation(image: Image.Image) -> list[dict]:
    messages = make_messages([("user", "What tissue is shown?"), ("assistant", "Colon mucosa.")])
    first = messages[0]["content"][0]
    first.pop("text")
    first["image"] = image
    return messages


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_round_trips_through_auto_classes(tmp_path, family):
    out = save_tiny_model(family, tmp_path / family, seed=0)
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)

    assert detect_family(model.config).name == family
    assert type(model).__name__ == get_family(family).model_class
    assert processor.chat_template  # saved with the processor
    assert sum(p.numel() for p in model.parameters()) < 200_000

    image = Image.new("RGB", (40, 48), (180, 90, 140))
    prompt = _conversation(image)[:1]
    inputs = processor.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert (inputs["input_ids"] == model.config.image_token_id).sum() > 0
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert logits.shape[-1] == model.config.get_text_config().vocab_size
    assert torch.isfinite(logits).all()
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    # Every parameter belongs to exactly one component of the family layout.
    fam = get_family(family)
    assert {name for name, _ in model.named_parameters() if fam.component_of(name) is None} == set()


def test_tokenizer_handles_pathology_text_without_unknowns(tmp_path):
    _, processor = build_tiny_model("llava")
    tok = processor.tokenizer
    text = "Adenocarcinoma with pleomorphic nuclei; Ki-67 ≈ 40% (H&E)."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # The corpus teaches merges: a frequent pathology word is shorter than its byte count.
    assert len(tok("adenocarcinoma", add_special_tokens=False)["input_ids"]) < len("adenocarcinoma")


def test_seed_decides_weights():
    a, _ = build_tiny_model("llava", seed=0)
    b, _ = build_tiny_model("llava", seed=0)
    c, _ = build_tiny_model("llava", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_llava_image_and_patch_size_are_configurable(tmp_path):
    out = tmp_path / "llava16"
    assert cli_main(["models", "tiny", "--family", "llava", "--output", str(out),
                     "--image-size", "32", "--patch-size", "4", "--hidden-size", "64"]) == 0
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.vision_config.patch_size == 4
    assert model.config.get_text_config().hidden_size == 64
    inputs = processor(images=Image.new("RGB", (50, 70)), text="USER: <image>\nhi ASSISTANT:", return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == (32, 32)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == (32 // 4) ** 2
    with torch.no_grad():
        model(**inputs)


def test_bad_requests_are_input_errors():
    with pytest.raises(InputError, match="llava"):
        build_tiny_model("blip2")
    with pytest.raises(InputError, match="multiple of patch_size"):
        build_tiny_model("llava", image_size=30, patch_size=8)
