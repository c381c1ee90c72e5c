"""End-to-end SFT on CPU with tiny real-architecture models and a PathEnhanceDS-shaped dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from support.training_fixtures import texture, tiny_model_cache, write_built_dataset
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from pathenhanceds.schema import make_messages
from pathinsight_models.families import get_family
from pathinsight_models.training import merge_adapter, train
from pathinsight_models.training.collator import VisionChatCollator
from pathinsight_models.training.trainer import training_chat_template

ROOT = Path(__file__).resolve().parents[1]
OVERLONG_ID = "test/overlong"
THREE_TURNS = [
    ("user", "What tissue is shown?"), ("assistant", "Colon mucosa with glands."),
    ("user", "Is it malignant?"), ("assistant", "No, it is benign."),
    ("user", "Which grade?"), ("assistant", "Not applicable."),
]


# ----------------------------------------------------------------------------------- fixtures


def _row(rid: str, seed: int, task: str, turns: list[tuple[str, str]]) -> dict:
    return {"id": rid, "source": "test", "task": task, "images": [texture(seed)],
            "messages": make_messages(turns), "label": None, "answer_type": None,
            "image_sha256": ["0" * 64], "license": "CC-BY-4.0"}


def write_dataset(root: Path) -> Path:
    """A PathEnhanceDS-layout directory (config `all`, train/validation) with one over-long row."""
    rows = []
    for i in range(7):
        if i % 3 == 0:
            rows.append(_row(f"test/{i}", i, "captioning",
                             [("user", "Describe the histopathology image."), ("assistant", "Colon mucosa.")]))
        elif i % 3 == 1:
            rows.append(_row(f"test/{i}", i, "vqa", [("user", "Is this tissue malignant?"), ("assistant", "yes")]))
        else:
            rows.append(_row(f"test/{i}", i, "conversation", THREE_TURNS))
    rows.insert(3, _row(OVERLONG_ID, 99, "captioning",
                        [("user", "Describe it."), ("assistant", " ".join(["adenocarcinoma"] * 200))]))
    return write_built_dataset(root, {"train": rows, "validation": rows[:2]})


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("pathenhanceds"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_cache(tmp_path_factory.mktemp("tiny"))


class Recorder(TrainerCallback):
    """Captures what actually trains: requires_grad per parameter and the optimizer's groups."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.groups = {g["name"]: g.get("initial_lr", g["lr"]) for g in optimizer.param_groups}


def _recipe(model: Path, data: Path, out: Path, **extra) -> dict:
    return {"model_name_or_path": str(model), "dataset_name": str(data), "output_dir": str(out),
            "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
            "save_strategy": "no", "max_length": 160, "seed": 0, **extra}


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    """Parameters by their in-memory names (transformers 5 saves some models under legacy key names)."""
    model = AutoModelForImageTextToText.from_pretrained(directory)
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def _changed_components(family: str, before: dict, after: dict) -> dict[str, set[bool]]:
    fam = get_family(family)
    out: dict[str, set[bool]] = {}
    assert before.keys() == after.keys()
    for name in before:
        out.setdefault(fam.component_of(name), set()).add(not torch.equal(before[name], after[name]))
    return out


def _inputs(processor, seed: int = 5):
    messages = [{"role": "user", "content": [{"type": "image", "image": texture(seed)},
                                             {"type": "text", "text": "What tissue is shown?"}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


# --------------------------------------------------------------------------------- label masks


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "idefics3"])
def test_labels_are_exactly_the_assistant_turns(tiny, family):
    processor = AutoProcessor.from_pretrained(tiny(family))
    template = training_chat_template(processor, get_family(family))
    collator = VisionChatCollator(processor=processor, chat_template=template)
    batch = collator([
        {"images": [texture(1)], "messages": make_messages(THREE_TURNS)},
        {"images": [texture(2)], "messages": make_messages(THREE_TURNS[:2])},  # padded row
    ])
    tok = processor.tokenizer
    answers = [text for role, text in THREE_TURNS if role == "assistant"]
    for row, expected in ((0, answers), (1, answers[:1])):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        kept = labels != -100
        assert torch.equal(labels[kept], ids[kept])
        runs, current = [], []
        for token, keep in zip(ids.tolist(), kept.tolist(), strict=True):
            if keep:
                current.append(token)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        assert [tok.decode(run, skip_special_tokens=True).strip() for run in runs] == expected
        # Each turn's end-of-turn token is learned, so the model learns to stop.
        assert all(tok.convert_ids_to_tokens(run[-1]) in tok.all_special_tokens or
                   tok.convert_ids_to_tokens(run[-2]) in tok.all_special_tokens for run in runs)
        image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        assert not (labels == image_token).any()


# llava-hf/llava-1.5-*-hf ship a template that marks the answer but not `</s>`: trained on it, a model
# would never learn to stop. The family template must win over it.
LLAVA_HF_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}"
    "{% endfor %}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def test_template_choice_keeps_the_end_of_turn_token(tiny, caplog):
    processor = AutoProcessor.from_pretrained(tiny("llava"))
    family = get_family("llava")
    assert training_chat_template(processor, family) == processor.chat_template  # tiny llava: family's own
    processor.chat_template = LLAVA_HF_TEMPLATE
    with caplog.at_level("WARNING", logger="pathinsight.training"):
        assert training_chat_template(processor, family) == family.chat_template
    assert "llava family" in caplog.text
    # Qwen's checkpoint template has no markers: TRL's training twin (same rendering) is used.
    from trl.chat_template_utils import qwen2_5_vl_training_chat_template

    qwen = AutoProcessor.from_pretrained(tiny("qwen2_5_vl"))
    assert "{%- generation" not in qwen.chat_template and "{% generation" not in qwen.chat_template
    assert training_chat_template(qwen, get_family("qwen2_5_vl")) == qwen2_5_vl_training_chat_template


# ------------------------------------------------------------------- llava: two-stage, LoRA, resume


@pytest.fixture(scope="module")
def llava_runs(tiny, dataset_dir, tmp_path_factory):
    """Stage 1 (align, full FT of the projector), then stage 2 (LoRA) from its output."""
    root = tmp_path_factory.mktemp("llava_runs")
    align_rec, lora_rec = Recorder(), Recorder()
    align = train(_recipe(tiny("llava"), dataset_dir, root / "align", method="full", stage="align",
                          dataset_config="all"), callbacks=[align_rec])
    lora_recipe = _recipe(align, dataset_dir, root / "lora", method="lora", tune_vision_tower=False, lora_r=4,
                          save_strategy="steps", save_steps=1, projector_lr=5e-4)
    lora = train(lora_recipe, callbacks=[lora_rec])
    return {"align": align, "lora": lora, "lora_recipe": lora_recipe, "align_rec": align_rec,
            "lora_rec": lora_rec, "root": root}


@pytest.mark.slow
def test_align_stage_trains_only_the_projector(tiny, llava_runs):
    out, rec = llava_runs["align"], llava_runs["align_rec"]
    fam = get_family("llava")
    assert {fam.component_of(n) for n in rec.trainable} == {"projector"}
    assert rec.trainable == {n for n in _weights(tiny("llava")) if n.startswith("model.multi_modal_projector.")}
    changed = _changed_components("llava", _weights(tiny("llava")), _weights(out))
    assert changed == {"vision_tower": {False}, "projector": {True}, "language_model": {False}}
    info = json.loads((out / "run_info.json").read_text())
    assert info["stage"] == "align" and info["trainable_parameters"]["language_model"]["trainable"] == 0


@pytest.mark.slow
def test_lora_outputs_and_trainable_set(llava_runs):
    out, rec = llava_runs["lora"], llava_runs["lora_rec"]
    for name in ("adapter_model.safetensors", "adapter_config.json", "recipe.yaml", "trainer_state.json",
                 "metrics.jsonl", "loss.png", "data_report.json", "run_info.json", "processor_config.json",
                 "tokenizer.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["multi_modal_projector"]  # no `model.`: loads onto both layouts
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(llava_runs["align"])
    # Exactly LoRA A/B on the language model plus the projector copy learn; no LoRA on the vision tower.
    fam = get_family("llava")
    assert rec.trainable
    for name in rec.trainable:
        component = fam.component_of(name)
        assert ("lora_" in name and component == "language_model") or (
            "modules_to_save" in name and component == "projector"), name
    assert {fam.component_of(n) for n in rec.trainable} == {"language_model", "projector"}
    assert rec.groups == {"language_model": 1e-3, "projector": 5e-4}
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert any("multi_modal_projector" in k for k in weights)
    assert not any("vision_tower" in k for k in weights)
    # The chat template saved with the processor marks assistant turns for later training.
    assert "{% generation %}" in (out / "chat_template.jinja").read_text()
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in history if "loss" in e] == [1, 2]
    assert all(np.isfinite(e["loss"]) for e in history if "loss" in e)


@pytest.mark.slow
def test_overlong_examples_are_dropped_and_counted(llava_runs):
    report = json.loads((llava_runs["lora"] / "data_report.json").read_text())
    assert report["max_length"] == 160
    assert (report["train"]["total"], report["train"]["kept"], report["train"]["dropped"]) == (8, 7, 1)
    assert [d["id"] for d in report["train"]["dropped_examples"]] == [OVERLONG_ID]
    assert report["train"]["dropped_examples"][0]["length"] > 160
    assert json.loads((llava_runs["lora"] / "run_info.json").read_text())["dropped_examples"] == {"train": 1}
    saved = yaml.safe_load((llava_runs["lora"] / "recipe.yaml").read_text())
    assert saved["max_length"] == 160 and saved["method"] == "lora" and saved["resume"] is False


@pytest.mark.slow
def test_adapter_reloads_and_merges_with_identical_logits(llava_runs, tmp_path):
    from peft import PeftModel

    out, base_dir = llava_runs["lora"], llava_runs["align"]
    processor = AutoProcessor.from_pretrained(out)
    inputs = _inputs(processor)
    auto = _logits(AutoModelForImageTextToText.from_pretrained(out), inputs)
    peft = _logits(PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_dir), str(out)),
                   inputs)
    base = _logits(AutoModelForImageTextToText.from_pretrained(base_dir), inputs)
    assert torch.allclose(auto, peft, atol=1e-6)
    assert not torch.allclose(auto, base, atol=1e-4)  # the adapter and projector did learn
    merged_dir = merge_adapter(out, tmp_path / "merged")
    merged = _logits(AutoModelForImageTextToText.from_pretrained(merged_dir), inputs)
    assert torch.allclose(merged, peft, atol=1e-5)
    assert AutoProcessor.from_pretrained(merged_dir).chat_template == processor.chat_template


@pytest.mark.slow
def test_resume_continues_the_step_count(llava_runs):
    out = llava_runs["lora"]
    assert (out / "checkpoint-2").is_dir()
    train({**llava_runs["lora_recipe"], "max_steps": 3}, resume=True)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == [1, 2, 3]  # history carried over from checkpoint-2, one new step


# -------------------------------------------------------------------------- qwen2.5-vl, idefics3


@pytest.mark.parametrize(
    ("family", "extra", "lora_on", "learns"),
    [
        ("qwen2_5_vl", {"tune_vision_tower": True, "vision_lr": 2e-4}, {"vision_tower", "language_model"},
         {"vision_tower", "projector", "language_model"}),
        # all_linear: the projector gets LoRA too instead of a full trainable copy.
        ("idefics3", {"lora_targets": "all_linear"}, {"vision_tower", "projector", "language_model"},
         {"vision_tower", "projector", "language_model"}),
    ],
)
@pytest.mark.slow
def test_lora_lands_where_asked(tiny, dataset_dir, tmp_path, family, extra, lora_on, learns):
    rec = Recorder()
    out = train(_recipe(tiny(family), dataset_dir, tmp_path / "o", method="lora", lora_r=4, **extra),
                callbacks=[rec])
    fam = get_family(family)
    assert {fam.component_of(n) for n in rec.trainable if "lora_" in n} == lora_on
    assert {fam.component_of(n) for n in rec.trainable} == learns
    assert all("lora_" in n or "modules_to_save" in n for n in rec.trainable)
    if "vision_lr" in extra:
        assert rec.groups == {"vision_tower": extra["vision_lr"], "projector": 1e-3, "language_model": 1e-3}
    base = AutoModelForImageTextToText.from_pretrained(tiny(family))
    inputs = _inputs(AutoProcessor.from_pretrained(out))
    assert not torch.allclose(_logits(AutoModelForImageTextToText.from_pretrained(out), inputs),
                              _logits(base, inputs), atol=1e-4)


@pytest.mark.parametrize(
    ("family", "flags"),
    [
        ("llava", {"tune_vision_tower": True, "tune_projector": True, "tune_language_model": True,
                   "vision_lr": 1e-4, "projector_lr": 2e-4}),
        ("qwen2_5_vl", {"tune_vision_tower": True, "tune_projector": True, "tune_language_model": False,
                        "dataset_test_split": "validation", "eval_strategy": "steps", "eval_steps": 2}),
        ("idefics3", {"tune_vision_tower": True, "tune_projector": False, "tune_language_model": True}),
    ],
)
@pytest.mark.slow
def test_full_finetuning_follows_the_freeze_flags(tiny, dataset_dir, tmp_path, family, flags):
    rec = Recorder()
    out = train(_recipe(tiny(family), dataset_dir, tmp_path / "o", method="full", **flags), callbacks=[rec])
    if "vision_lr" in flags:
        assert rec.groups == {"vision_tower": 1e-4, "projector": 2e-4, "language_model": 1e-3}
        first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        # The schedule scales all groups together, so the ratios stay put.
        assert first["learning_rate/vision_tower"] / first["learning_rate/language_model"] == pytest.approx(0.1)
        assert first["learning_rate/projector"] / first["learning_rate/language_model"] == pytest.approx(0.2)
    if "dataset_test_split" in flags:
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [e["step"] for e in history if "eval_loss" in e] == [2]
    fam = get_family(family)
    before, after = _weights(tiny(family)), _weights(out)
    tuned = {c for c in ("vision_tower", "projector", "language_model") if flags[f"tune_{c}"]}
    assert {fam.component_of(n) for n in rec.trainable} == tuned
    assert rec.trainable == {n for n in before if fam.component_of(n) in tuned}
    changed = _changed_components(family, before, after)
    for component, states in changed.items():
        if component in tuned:
            assert True in states, component  # something learned
        else:
            assert states == {False}, component  # frozen means bit-identical
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()


# ---------------------------------------------------------------------------- accelerate, 2 CPUs


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_cpu_run_trains_and_saves_once(tiny, dataset_dir, tmp_path):
    out = tmp_path / "ddp"
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tiny("llava"), dataset_dir, out, method="lora", lora_r=4,
                                             tune_vision_tower=False)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/cpu_2proc.yaml"), "--main_process_port", "29533",
           "-m", "pathinsight_models.training", "--config", str(recipe)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 2
    # Both ranks print the output dir; only rank 0 wrote the run files (one history, one plot).
    assert proc.stdout.count(str(out)) == 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2]
    assert (out / "adapter_model.safetensors").is_file() and not list(out.glob("checkpoint-*"))


@pytest.mark.slow
def test_trains_on_the_real_builder_output(tiny, sample_build, tmp_path):
    """The builder's dataset (all configs, every task) goes through the same path as the fixture above."""
    rec = Recorder()
    out = train(_recipe(tiny("qwen2_5_vl"), sample_build.output, tmp_path / "o", method="lora", lora_r=4,
                        max_train_samples=6, max_length=4096, dataset_test_split="validation",
                        eval_strategy="steps", eval_steps=2), callbacks=[rec])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert any("eval_loss" in e for e in state["log_history"])
    report = json.loads((out / "data_report.json").read_text())
    assert report["train"]["total"] == 6 and report["train"]["kept"] + report["train"]["dropped"] == 6


@pytest.mark.slow
def test_eval_tasks_recipe_field_logs_task_metrics_next_to_loss(tiny, sample_build, tmp_path):
    """`eval_tasks` wires the evaluation callback: CRC metrics appear in the log at the chosen steps."""
    out = train(_recipe(tiny("llava"), sample_build.output, tmp_path / "o", dataset_config="classification",
                        method="full", max_train_samples=8, max_length=4096, eval_tasks=["crc"],
                        eval_tasks_steps=2, eval_tasks_limit=4))
    state = json.loads((out / "trainer_state.json").read_text())
    task_logs = [e for e in state["log_history"] if "task_crc/f1" in e]
    assert [e["step"] for e in task_logs] == [2]
    assert 0.0 <= task_logs[0]["task_crc/f1"] <= 1.0 and "task_crc/unparsed" in task_logs[0]
    assert any("loss" in e and e["step"] == 2 for e in state["log_history"])
