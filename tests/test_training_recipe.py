"""Recipes, CLI parsing, message conversion and early failures (no model is trained here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pathenhanceds.errors import InputError
from pathenhanceds.schema import make_messages
from pathinsight_models.cli import build_parser
from pathinsight_models.cli import main as cli_main
from pathinsight_models.families import get_family
from pathinsight_models.training import params
from pathinsight_models.training.data import to_chat_messages
from pathinsight_models.training.recipe import RecipeArguments, load_recipe
from pathinsight_models.training.trainer import train

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
BASE = {"model_name_or_path": "some/model", "dataset_name": "some/data", "output_dir": "out"}


def test_yaml_python_and_cli_layers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, "learning_rate": 1e-5, "max_steps": 10, "lora_r": 8,
                                    "gradient_checkpointing": True}))
    recipe = load_recipe(path, {"max_steps": 20, "vision_lr": 3e-6},
                         ["--max_steps", "30", "--lora_alpha=64", "--processor_kwargs", '{"size": {"a": 1}}'])
    args, sft = recipe.args, recipe.sft
    assert sft.learning_rate == 1e-5  # file
    assert args.vision_lr == 3e-6  # python override
    assert sft.max_steps == 30  # command line wins
    assert (recipe.model.lora_r, recipe.model.lora_alpha) == (8, 64)  # TRL's ModelConfig
    assert args.processor_kwargs == {"size": {"a": 1}}
    # The deprecated transformers name still switches checkpointing on.
    assert sft.activation_checkpointing is True and sft.gradient_checkpointing is True
    # TRL's ON-by-default bf16 follows the device instead; loss on assistant tokens by default.
    assert sft.bf16 is bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert sft.assistant_only_loss is True
    # TRL never truncates (image tokens): the limit is applied by dropping examples instead.
    assert recipe.max_length == 1024 and sft.max_length is None


def test_saved_recipe_round_trips(tmp_path):
    recipe = load_recipe({**BASE, "method": "full", "tune_vision_tower": False, "lr_scheduler_type": "cosine",
                          "max_length": 512, "warmup_steps": 0.05})
    saved = recipe.save(tmp_path / "recipe.yaml")
    again = load_recipe(saved)
    assert again.to_dict() == recipe.to_dict()
    data = yaml.safe_load(saved.read_text())
    assert data["max_length"] == 512 and data["lr_scheduler_type"] == "cosine"
    assert data["tune_vision_tower"] is False and data["bf16"] in (True, False)
    assert "gradient_checkpointing" not in data and "hub_token" not in data
    assert "use_cpu" not in data  # placement is re-derived on the machine that reruns it


def test_stage_defaults_and_contradictions():
    align = load_recipe({**BASE, "stage": "align", "method": "full"}).args
    assert (align.tune_vision_tower, align.tune_projector, align.tune_language_model) == (False, True, False)
    assert load_recipe({**BASE, "stage": "align", "method": "full"}).script.dataset_config == "captioning"
    finetune = load_recipe(BASE).args
    assert (finetune.tune_vision_tower, finetune.tune_projector, finetune.tune_language_model) == (True, True, True)
    assert load_recipe(BASE).script.dataset_config == "all"

    with pytest.raises(InputError, match="method: full"):
        load_recipe({**BASE, "stage": "align", "method": "lora"})
    with pytest.raises(InputError, match="nothing to train"):
        load_recipe({**BASE, "tune_vision_tower": False, "tune_projector": False, "tune_language_model": False})
    with pytest.raises(InputError, match="packing"):
        load_recipe({**BASE, "packing": True})
    with pytest.raises(InputError, match="output_dir"):
        load_recipe({"model_name_or_path": "m", "dataset_name": "d"})
    with pytest.raises(InputError, match="learning_rate"):
        load_recipe({**BASE, "learnig_rate": 1e-5})  # typo gets a suggestion
    with pytest.raises(InputError, match="unknown method"):
        load_recipe({**BASE, "method": "dora"})
    with pytest.raises(InputError, match="unknown command-line"):
        load_recipe(BASE, cli_args=["stray"])


def test_lora_targets_follow_the_flags():
    family = get_family("llava")
    args = RecipeArguments(tune_vision_tower=False)
    assert params.lora_components(family, args) == ("language_model",)
    args = RecipeArguments()
    assert params.lora_components(family, args) == ("vision_tower", "language_model")
    args.lora_targets = "all_linear"
    assert params.lora_components(family, args) == ("vision_tower", "projector", "language_model")
    args.lora_targets = "language"
    with pytest.raises(InputError, match="vision_tower"):
        params.lora_components(family, args)
    args.tune_vision_tower, args.tune_projector, args.lora_targets = True, False, "all_linear"
    with pytest.raises(InputError, match="tune_projector"):
        params.lora_components(family, args)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    data = yaml.safe_load(path.read_text())
    assert recipe.args.method in ("lora", "qlora", "full")
    assert recipe.max_length == 2048 and recipe.sft.assistant_only_loss
    if path.name in ("llava15_7b_full.yaml", "llava15_7b_lora.yaml", "qwen25vl_7b_full.yaml",
                     "qwen25vl_7b_lora.yaml"):
        # The paper's setting, vision encoder tuned too.
        assert (data["learning_rate"], data["per_device_train_batch_size"], data["warmup_steps"],
                data["num_train_epochs"]) == (1e-5, 2, 0.05, 3)
        assert recipe.args.tune_vision_tower and recipe.args.tune_projector and recipe.args.tune_language_model


def test_recipe_set_covers_the_presets():
    names = {p.name for p in RECIPES.glob("*.yaml")}
    methods = {yaml.safe_load((RECIPES / n).read_text())["method"] for n in names}
    assert methods == {"lora", "qlora", "full"}
    stage2 = yaml.safe_load((RECIPES / "llava15_7b_stage2_finetune.yaml").read_text())
    stage1 = yaml.safe_load((RECIPES / "llava15_7b_stage1_align.yaml").read_text())
    assert stage1["stage"] == "align" and stage2["model_name_or_path"] == stage1["output_dir"]


def test_to_chat_messages_is_pure_and_drops_none():
    messages = make_messages([("user", "What is shown?"), ("assistant", "Stroma.")])
    before = [dict(m) for m in messages]
    out = to_chat_messages(messages)
    assert out == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Stroma."}]},
    ]
    assert messages == before  # input untouched
    assert to_chat_messages([{"role": "user", "content": "hi"}]) == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    ]


def test_cli_hands_every_argument_to_trls_parser(tmp_path):
    argv = ["--config", "r.yaml", "--learning_rate", "1e-5", "--resume", "--max_steps", "3"]
    args = build_parser(["train"]).parse_args(["train", *argv])
    assert args.arguments == argv  # verbatim: TrlParser reads them (see tests/test_train_cli.py)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    recipe = load_recipe(None, cli_args=[a if a != "r.yaml" else str(path) for a in argv])
    assert recipe.args.resume and recipe.sft.learning_rate == 1e-5 and recipe.sft.max_steps == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA failure path")
def test_qlora_without_cuda_fails_early(tmp_path):
    with pytest.raises(InputError, match="CUDA"):
        train({**BASE, "output_dir": str(tmp_path / "o"), "method": "qlora"})


def test_resume_without_checkpoint_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(InputError, match="no checkpoint"):
        train({**BASE, "output_dir": str(tmp_path / "o")}, resume=True)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, "output_dir": str(tmp_path / "o")}))
    assert cli_main(["train", "--config", str(path), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli_main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_remote_code_models_are_refused_unless_allowed(tmp_path):
    import json

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({
        "model_type": "internlmxcomposer2",
        "auto_map": {"AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config"},
    }))
    with pytest.raises(InputError, match="trust_remote_code: true"):
        train({**BASE, "model_name_or_path": str(remote), "output_dir": str(tmp_path / "o")})
