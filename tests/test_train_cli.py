"""`pathinsight train` as a TRL-native command line; continuing and stacking adapters; loading adapters
with `AutoModel`, `AutoModelForImageTextToText` and `PeftModel` (tiny real architectures, offline)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from support.training_fixtures import texture, tiny_model_cache, write_built_dataset

from pathenhanceds.errors import InputError
from pathenhanceds.schema import make_messages
from pathinsight_models.cli import main as cli_main
from pathinsight_models.training.recipe import argument_classes, load_recipe

torch.set_num_threads(1)

BASE = {"model_name_or_path": "some/model", "dataset_name": "some/data", "output_dir": "out"}
CLASSES = ("adipose", "stroma", "mucus")


def write_dataset(root: Path, n: int = 6) -> Path:
    """A PathEnhanceDS-layout directory (config `all`, split train) of short classification rows."""
    rows = [{"id": f"t/{i}", "source": "test", "task": "classification", "images": [texture(i)],
             "messages": make_messages([("user", "What type of tissue is shown?"),
                                        ("assistant", CLASSES[i % len(CLASSES)])]),
             "label": CLASSES[i % len(CLASSES)], "answer_type": None, "image_sha256": ["0" * 64],
             "license": "CC-BY-4.0"} for i in range(n)]
    return write_built_dataset(root, {"train": rows})


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_cache(tmp_path_factory.mktemp("tiny"))


def _fields(out: Path | str, model: Path | str, data: Path, *extra: str) -> list[str]:
    return ["train", "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "5e-3",
            "--logging_steps", "1", "--save_strategy", "no", "--max_length", "160", "--seed", "0", *extra]


# ----------------------------------------------------------------------------------- parsing


def test_help_lists_every_trl_and_pathinsight_field_with_its_default(capsys):
    assert cli_main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--config" in text and "usage: pathinsight train" in text
    blocks = {b.split()[0]: b for b in re.split(r"\n  (?=-)", text) if b.startswith("--")}
    names = [f.name for cls in argument_classes() for f in dataclasses.fields(cls)]
    assert {"learning_rate", "dataset_name", "lora_r", "use_peft", "method", "adapter"} <= set(names)
    for name in names:
        block = next((b for flag, b in blocks.items() if flag == f"--{name}"), None)
        assert block is not None, name
        assert "(default:" in " ".join(block.split()), name  # help text ends with the default
    from trl import SFTConfig

    trl_lr = SFTConfig.__dataclass_fields__["learning_rate"].default
    assert f"(default: {trl_lr})" in " ".join(blocks["--learning_rate"].split())  # TRL's own default
    assert "Model checkpoint for weights initialization" in " ".join(blocks["--model_name_or_path"].split())


def test_unknown_fields_name_the_closest_valid_one(tmp_path, capsys):
    assert cli_main(["train", "--model_name_or_path", "m", "--learnig_rate", "1e-5"]) == 2
    err = capsys.readouterr().err
    assert "--learnig_rate" in err and "--learning_rate" in err
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**BASE, "lora_rank": 8}))
    assert cli_main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "lora_rank" in err and "lora_r" in err
    # No silent abbreviations: a prefix of a field is unknown too.
    with pytest.raises(InputError, match="learning_rate"):
        load_recipe(BASE, cli_args=["--learning_rat", "1e-5"])
    with pytest.raises(InputError, match="max_steps"):
        load_recipe(BASE, cli_args=["--max_steps", "many"])


def test_fields_land_in_trl_dataclasses_and_config_is_optional(tmp_path):
    from trl import ModelConfig, ScriptArguments, SFTConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**BASE, "lora_r": 8, "learning_rate": 1e-5}))
    r = load_recipe(None, cli_args=["--config", str(recipe), "--learning_rate", "3e-5", "--lora_alpha", "4"])
    assert isinstance(r.script, ScriptArguments) and isinstance(r.model, ModelConfig) and isinstance(r.sft, SFTConfig)
    assert (r.model.lora_r, r.model.lora_alpha, r.sft.learning_rate) == (8, 4, 3e-5)
    assert r.script.dataset_name == "some/data" and r.script.dataset_config == "all"
    assert r.args.method == "lora" and r.model.use_peft
    # The same without a file, TRL's flags for the method included.
    flat = load_recipe(None, cli_args=["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o",
                                       "--use_peft", "--lora_target_modules", "q_proj", "v_proj"])
    assert flat.args.method == "lora" and flat.model.lora_target_modules == ["q_proj", "v_proj"]
    assert load_recipe(BASE, {"load_in_4bit": True}).args.method == "qlora"
    with pytest.raises(InputError, match="method full"):
        load_recipe(BASE, {"method": "full", "use_peft": True})
    with pytest.raises(InputError, match="given twice"):
        load_recipe(BASE, cli_args=["--config", str(recipe)])
    # The saved recipe holds TRL's and our fields flat and loads back to the same recipe.
    saved = r.save(tmp_path / "saved.yaml")
    assert load_recipe(saved).to_dict() == r.to_dict()


# ------------------------------------------------------------------- layouts of saved adapters


def _adapter(family: str, base: Path, out: Path) -> Path:
    """An adapter as `pathinsight train --method lora` saves it (LoRA on both towers, projector kept), with
    non-zero LoRA weights and a perturbed projector so that loading it visibly changes the model."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from pathinsight_models.families import get_family
    from pathinsight_models.training.params import build_lora_config

    recipe = load_recipe({**BASE, "model_name_or_path": str(base), "lora_r": 2})
    model = AutoModelForImageTextToText.from_pretrained(base)
    config = build_lora_config(model, get_family(family), recipe.args, recipe.model)
    config.init_lora_weights = False
    peft = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "modules_to_save" in name:
                param.add_(0.05)
    peft.save_pretrained(out)
    return out


def _inputs(base: Path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(base)
    messages = [{"role": "user", "content": [{"type": "image", "image": texture(7)},
                                             {"type": "text", "text": "What tissue is shown?"}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def _text_inputs(base: Path):
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(base).tokenizer
    return dict(tokenizer("What tissue is shown? Colon mucosa.", return_tensors="pt"))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "idefics3"])
def test_adapters_load_with_automodel_image_text_to_text_and_peft(tiny, tmp_path, family):
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForImageTextToText

    base = tiny(family)
    adapter = _adapter(family, base, tmp_path / "adapter")
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert not any(m.startswith("model.") for m in saved["modules_to_save"])  # layout-free names
    inputs = _inputs(base)
    with torch.no_grad():
        peft = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), str(adapter)).eval()
        reference = peft(**inputs, output_hidden_states=True)
        plain = AutoModelForImageTextToText.from_pretrained(base).eval()(**inputs)
        auto_lm = AutoModelForImageTextToText.from_pretrained(adapter).eval()(**inputs)
        backbone = AutoModel.from_pretrained(adapter).eval()
        assert not type(backbone).__name__.endswith("ForConditionalGeneration")
        hidden = backbone(**inputs).last_hidden_state
    assert not torch.allclose(reference.logits, plain.logits, atol=1e-4)  # the adapter changes the model
    assert torch.allclose(auto_lm.logits, reference.logits, atol=1e-5)
    if family == "qwen2_5_vl" and not torch.allclose(hidden, reference.hidden_states[-1], atol=1e-5):
        # transformers' key conversion for the bare Qwen2(.5)-VL model (`PrefixChange(prefix_to_add=
        # "language_model", model_prefix="model")`) also renames `model.visual.*` adapter keys, so AutoModel
        # drops the vision-tower LoRA and the merger copy (upstream bug); the language-model part loads.
        text = _text_inputs(base)
        with torch.no_grad():
            text_hidden = backbone(**text).last_hidden_state
            text_reference = peft(**text, output_hidden_states=True).hidden_states[-1]
        assert torch.allclose(text_hidden, text_reference, atol=1e-5)
        pytest.xfail("AutoModel drops Qwen2.5-VL vision-side adapter weights (transformers key conversion)")
    assert torch.allclose(hidden, reference.hidden_states[-1], atol=1e-5)  # the same adapted backbone


def test_model_card_lists_lineage_and_both_loaders():
    from pathinsight_models.publish.model_card import CardInfo, build_model_card, sanitize_recipe

    info = CardInfo(repo_id="me/pathinsight-mine", base_model="org/base", weight_type="Adapter",
                    base_license="apache-2.0", dataset_ids=["me/data"], dataset_license="cc-by-4.0",
                    parents=["org/pathinsight-adapter"])
    card = build_model_card(info)
    assert card.data.base_model == ["org/base", "org/pathinsight-adapter"]
    assert card.data.base_model_relation == "adapter"
    assert "AutoModel.from_pretrained(\"me/pathinsight-mine\")" in card.text
    assert "AutoModelForImageTextToText.from_pretrained(\"me/pathinsight-mine\")" in card.text
    assert "PeftModel.from_pretrained(base, \"me/pathinsight-mine\")" in card.text
    merged = build_model_card(dataclasses.replace(info, weight_type="Merged"))
    assert merged.data.base_model_relation == "finetune" and "PeftModel" not in merged.text
    recipe = sanitize_recipe({"model_name_or_path": "/local/run", "adapter": None, "dataset_name": "/d"},
                             "org/base", "me/data", {"start": "adapter", "parent": "org/pathinsight-adapter",
                                                     "parent_kind": "adapter"})
    assert recipe["model_name_or_path"] == "org/pathinsight-adapter"


# --------------------------------------------------------------- train, continue, stack (llava)


@pytest.fixture(scope="module")
def runs(tiny, dataset_dir, tmp_path_factory):
    """A LoRA run from the command line (no --config), continued, and stacked on."""
    root = tmp_path_factory.mktemp("runs")
    base = tiny("llava")
    first, cont, stacked = root / "first", root / "continued", root / "stacked"
    assert cli_main(_fields(first, base, dataset_dir, "--method", "lora", "--lora_r", "4",
                            "--tune_vision_tower", "false")) == 0
    assert cli_main(_fields(cont, first, dataset_dir)) == 0
    assert cli_main(_fields(stacked, base, dataset_dir, "--adapter", str(first), "--method", "lora",
                            "--lora_r", "2", "--tune_vision_tower", "false")) == 0
    return {"base": base, "first": first, "continued": cont, "stacked": stacked}


@pytest.mark.slow
def test_train_from_command_line_fields_without_config(runs):
    first = runs["first"]
    saved = yaml.safe_load((first / "recipe.yaml").read_text())
    assert saved["method"] == "lora" and saved["lora_r"] == 4 and saved["learning_rate"] == 5e-3
    config = json.loads((first / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["modules_to_save"] == ["multi_modal_projector"]
    assert json.loads((first / "run_info.json").read_text())["lineage"]["start"] == "model"


@pytest.mark.slow
def test_continuing_an_adapter_trains_the_same_adapter_on_the_original_base(runs):
    first, cont = runs["first"], runs["continued"]
    before, after = load_file(str(first / "adapter_model.safetensors")), load_file(str(cont / "adapter_model.safetensors"))
    assert before.keys() == after.keys()  # same adapter: same LoRA modules and the saved projector
    assert any("multi_modal_projector" in k for k in after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any("multi_modal_projector" in k for k in changed)
    config, original = (json.loads((d / "adapter_config.json").read_text()) for d in (cont, first))
    assert config["base_model_name_or_path"] == original["base_model_name_or_path"] == str(runs["base"])
    assert config["r"] == original["r"] == 4
    info = json.loads((cont / "run_info.json").read_text())
    assert info["base_model"] == str(runs["base"])
    assert info["lineage"]["start"] == "adapter" and info["lineage"]["parent"] == str(first)
    assert yaml.safe_load((cont / "recipe.yaml").read_text())["model_name_or_path"] == str(first)


@pytest.mark.slow
def test_stacking_trains_a_new_adapter_on_the_merged_parent(runs):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    stacked, first = runs["stacked"], runs["first"]
    config = json.loads((stacked / "adapter_config.json").read_text())
    parent = stacked / "parent_merged"
    assert config["r"] == 2 and config["base_model_name_or_path"] == str(parent.resolve())
    inputs = _inputs(runs["base"])
    with torch.no_grad():
        merged_first = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(runs["base"]),
                                                 str(first)).merge_and_unload().eval()(**inputs).logits
        parent_logits = AutoModelForImageTextToText.from_pretrained(parent).eval()(**inputs).logits
        result = AutoModelForImageTextToText.from_pretrained(stacked).eval()(**inputs).logits
    assert torch.allclose(parent_logits, merged_first, atol=1e-5)  # the parent is base + first adapter
    assert not torch.allclose(result, parent_logits, atol=1e-4)  # and the new adapter learned on top
    info = json.loads((stacked / "run_info.json").read_text())
    assert info["lineage"]["start"] == "stacked" and info["lineage"]["parent"] == str(first)


def test_contradictory_starting_points_are_input_errors(tiny, dataset_dir, tmp_path):
    from pathinsight_models.training.continuing import resolve_starting_point

    base = tiny("llava")
    adapter = _adapter("llava", base, tmp_path / "adapter")
    point = resolve_starting_point(str(adapter), "main", None, None, "lora")
    assert point.kind == "adapter" and point.base == str(base)
    with pytest.raises(InputError, match="--adapter"):
        resolve_starting_point(str(adapter), None, str(adapter), None, "lora")
    with pytest.raises(InputError, match="method lora"):
        resolve_starting_point(str(adapter), None, None, None, "full")
    with pytest.raises(InputError, match="not a LoRA adapter"):
        resolve_starting_point(str(base), None, str(base), None, "lora")
    assert resolve_starting_point(str(base), None, str(adapter), None, "full").kind == "stacked"


# ------------------------------------------------------------------------- the downstream demo


@pytest.mark.slow
def test_downstream_demo_raises_the_new_classes_macro_f1(tmp_path):
    from pathinsight_models.demo_downstream import LAB_CLASSES, DownstreamSettings, run_downstream_demo

    summary = run_downstream_demo(DownstreamSettings(output=tmp_path / "demo", pretrain_steps=40, max_steps=100,
                                                     images_per_class=20))
    assert summary["classes"] == sorted(LAB_CLASSES)
    assert summary["macro_f1"]["after"] > summary["macro_f1"]["before"] and summary["improved"]
    lineage = summary["lineage"]
    assert lineage["start"] == "adapter" and lineage["parent"] == summary["adapter"]
    config = json.loads((Path(summary["continued"]) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "demo" / "models" / "base")


@pytest.mark.slow
def test_continuing_a_hub_adapter_pins_revisions_and_publishes_lineage(runs, dataset_dir, hub, tmp_path):
    import shutil

    from huggingface_hub import HfApi

    from pathinsight_models.publish.model import prepare_model_folder

    api = HfApi()
    base_id, adapter_id = hub.new_repo_id("tiny-llava-base"), hub.new_repo_id("tiny-llava-adapter")
    for repo in (base_id, adapter_id):
        api.create_repo(repo)
    api.upload_folder(repo_id=base_id, folder_path=str(runs["base"]))
    folder = tmp_path / "adapter_repo"
    shutil.copytree(runs["first"], folder, ignore=shutil.ignore_patterns("checkpoint-*", "*.bin"))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base_id}))
    sha = api.upload_folder(repo_id=adapter_id, folder_path=str(folder)).oid
    api.upload_file(repo_id=adapter_id, path_or_fileobj=b"later", path_in_repo="NOTES.md")  # main moves on

    out = tmp_path / "continued"
    assert cli_main(_fields(out, adapter_id, dataset_dir, "--model_revision", sha)) == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == base_id
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["model_name_or_path"] == adapter_id and saved["model_revision"] == sha
    lineage = json.loads((out / "run_info.json").read_text())["lineage"]
    assert lineage["parent"] == adapter_id and lineage["parent_revision"] == sha
    assert lineage["base_model"] == base_id and re.fullmatch(r"[0-9a-f]{40}", lineage["base_revision"])

    staged = prepare_model_folder(out, "me/tiny-continued", tmp_path / "stage", dataset_id="me/data",
                                  base_license="apache-2.0", dataset_license="cc-by-4.0", offline=True)
    assert staged.base_model == base_id and staged.weight_type == "Adapter"
    card = (tmp_path / "stage" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == [base_id, adapter_id] and front["base_model_relation"] == "adapter"
    assert yaml.safe_load((tmp_path / "stage" / "recipe.yaml").read_text())["model_name_or_path"] == adapter_id
