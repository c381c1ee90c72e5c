"""`loading.load_for_inference`: full models vs adapter directories, the processor rule, provenance, merging.

Real tiny random LLaVA models and real PEFT adapters on CPU; answers are compared through logits, not
through what the untrained model says.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pathenhanceds.errors import InputError
from pathinsight_models.loading import has_processor_files, load_for_inference, local_fingerprint
from pathinsight_models.tiny import save_tiny_model


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny LLaVA base and a LoRA adapter of it (adapter_config.json names the base directory)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    root = tmp_path_factory.mktemp("loading")
    base = save_tiny_model("llava", root / "base", seed=1)
    model = AutoModelForImageTextToText.from_pretrained(base)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(root / "adapter")
    return {"root": root, "base": base, "adapter": root / "adapter"}


def _logits(model, processor) -> torch.Tensor:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What tissue is shown?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (40, 40), (180, 90, 140))], return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def _reference_logits(dirs) -> torch.Tensor:
    """The adapter applied by PEFT directly, unmerged."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = AutoModelForImageTextToText.from_pretrained(dirs["base"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(dirs["adapter"])).eval()
    return _logits(model, AutoProcessor.from_pretrained(dirs["base"]))


def test_full_model_directory(dirs):
    model, processor, info = load_for_inference(str(dirs["base"]), device="cpu")
    assert type(model).__name__ == info["class"] == "LlavaForConditionalGeneration"
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert info["id"] == str(dirs["base"]) and info["revision"] is None and info["commit"] is None
    assert info["digest"] == local_fingerprint(dirs["base"])
    assert "base_model" not in info and "adapter" not in info
    assert info["processor_from"] == str(dirs["base"])
    assert (info["dtype"], info["device"]) == ("float32", "cpu")  # dtype None on CPU: float32
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    _, _, auto = load_for_inference(str(dirs["base"]), device="cpu", dtype="bfloat16", fingerprint=False)
    assert auto["dtype"] == "bfloat16" and "digest" not in auto


def test_adapter_directory_as_the_model_falls_back_to_the_base_processor(dirs):
    assert not has_processor_files(dirs["adapter"])
    model, processor, info = load_for_inference(str(dirs["adapter"]), device="cpu")
    assert info["id"] == str(dirs["adapter"]) and info["base_model"] == str(dirs["base"])
    assert info["processor_from"] == str(dirs["base"])  # the adapter has none: its base model's
    assert info["digest"] == local_fingerprint(dirs["adapter"])
    assert torch.allclose(_logits(model, processor), _reference_logits(dirs), atol=1e-5)


def test_separate_adapter_is_merged_and_its_processor_wins_when_it_has_one(dirs, tmp_path):
    model, processor, info = load_for_inference(str(dirs["base"]), adapter=str(dirs["adapter"]), device="cpu")
    assert info["adapter"] == str(dirs["adapter"]) and info["adapter_merged"] is True
    assert info["adapter_digest"] == local_fingerprint(dirs["adapter"]) and info["adapter_commit"] is None
    assert info["processor_from"] == str(dirs["base"])
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged: plain weights
    assert torch.allclose(_logits(model, processor), _reference_logits(dirs), atol=1e-4)

    with_processor = tmp_path / "adapter"
    shutil.copytree(dirs["adapter"], with_processor)
    from transformers import AutoProcessor

    AutoProcessor.from_pretrained(dirs["base"]).save_pretrained(with_processor)
    unmerged, _, info = load_for_inference(str(dirs["base"]), adapter=str(with_processor), device="cpu",
                                           merge_adapter=False)
    assert info["processor_from"] == str(with_processor) and info["adapter_merged"] is False
    assert any("lora" in name for name, _ in unmerged.named_parameters())


def test_merge_adapter_writes_a_full_model_with_the_same_outputs(dirs, tmp_path):
    from pathinsight_models.training.artifacts import merge_adapter

    out = merge_adapter(dirs["adapter"], tmp_path / "merged")
    assert (out / "config.json").is_file() and has_processor_files(out) and not (out / "adapter_config.json").exists()
    model, processor, info = load_for_inference(str(out), device="cpu")
    assert "base_model" not in info
    assert torch.allclose(_logits(model, processor), _reference_logits(dirs), atol=1e-4)
    with pytest.raises(InputError, match="not a LoRA adapter"):
        merge_adapter(dirs["base"], tmp_path / "nope")
    with pytest.raises(InputError, match="cannot load the adapter's base model"):
        merge_adapter(dirs["adapter"], tmp_path / "nope", base_model=str(tmp_path / "missing-base"))


def test_input_errors(dirs, tmp_path):
    with pytest.raises(InputError, match="cannot load model"):
        load_for_inference(str(tmp_path / "missing"), device="cpu")
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy2(dirs["base"] / name, bare / name)
    with pytest.raises(InputError, match="has no processor files"):
        load_for_inference(str(bare), device="cpu")
    with pytest.raises(InputError, match="unknown dtype"):
        load_for_inference(str(dirs["base"]), device="cpu", dtype="float33")
    with pytest.raises(InputError, match="cannot load adapter"):
        load_for_inference(str(dirs["base"]), adapter=str(tmp_path / "no-adapter"), device="cpu")
