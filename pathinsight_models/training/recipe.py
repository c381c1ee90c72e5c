"""Training recipes: one YAML file = `RecipeArguments` (ours) + TRL `SFTConfig` fields, flat.

Layers, lowest priority first: device-dependent defaults (bf16, gradient checkpointing), the YAML
file, Python keyword overrides, then `--key value` command-line overrides. All of it goes through
TRL's `TrlParser` (an `HfArgumentParser`), so every `SFTConfig` / `TrainingArguments` field is a
valid recipe key and types are checked the same way as for `trl sft`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from pathenhanceds.errors import InputError

METHODS = ("lora", "qlora", "full")
STAGES = ("align", "finetune")
LORA_TARGETS = ("auto", "language", "vision_language", "all_linear")

# Per-stage defaults of the component flags: (vision tower, projector, language model).
# `align` is LLaVA's stage 1: only the projector learns, on captioning data.
STAGE_DEFAULTS = {"align": (False, True, False), "finetune": (True, True, True)}
STAGE_DATASET_CONFIG = {"align": "captioning", "finetune": "all"}


@dataclass
class RecipeArguments:
    """PathInsight-specific recipe fields (everything else is a TRL `SFTConfig` field)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model id on the Hub or local directory (native transformers VLM)."}
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})
    family: str | None = field(
        default=None, metadata={"help": "Force a model family (default: detected from the model config)."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "PathEnhanceDS directory or Hub id, read with datasets.load_dataset."}
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Dataset config (captioning|classification|vqa|conversation|all). "
                                         "Default: captioning for stage align, all for finetune."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Training split."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Evaluation split (e.g. validation); none by default."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (smoke runs)."}
    )
    method: str = field(default="lora", metadata={"help": "lora | qlora | full", "choices": list(METHODS)})
    stage: str = field(default="finetune", metadata={"help": "align | finetune", "choices": list(STAGES)})
    tune_vision_tower: bool | None = field(
        default=None, metadata={"help": "Train the vision tower (LoRA on it under lora/qlora)."}
    )
    tune_projector: bool | None = field(
        default=None, metadata={"help": "Train the projector (fully; `modules_to_save` under lora/qlora)."}
    )
    tune_language_model: bool | None = field(
        default=None, metadata={"help": "Train the language model (LoRA on it under lora/qlora)."}
    )
    vision_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of vision-tower parameters (default: learning_rate)."}
    )
    projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of projector parameters (default: learning_rate)."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_targets: str = field(
        default="auto",
        metadata={"help": "auto (from the tune_* flags) | language | vision_language | all_linear",
                  "choices": list(LORA_TARGETS)},
    )
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Explicit PEFT target_modules (overrides lora_targets)."}
    )
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised LoRA scaling."})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "QLoRA 4-bit type: nf4 | fp4."})
    use_bnb_nested_quant: bool = field(default=True, metadata={"help": "QLoRA double quantisation."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype: auto (bf16 for LoRA when bf16 is on, else float32) | bfloat16 | "
                          "float16 | float32."},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "eager | sdpa | flash_attention_2 (default: transformers' choice)."}
    )
    processor_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Image-processor settings (JSON / mapping), or `family` for the family's settings "
                          "(e.g. Qwen max pixels). Default: the checkpoint's own."},
    )
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    eval_tasks: list[str] | None = field(
        default=None,
        metadata={"help": "Generation-based task metrics (e.g. crc pcam) logged next to the loss during training."},
    )
    eval_tasks_steps: int = field(default=100, metadata={"help": "Run eval_tasks every N optimizer steps."})
    eval_tasks_limit: int | None = field(
        default=32, metadata={"help": "Validation rows (whole images) per task for eval_tasks."}
    )
    eval_tasks_split: str = field(default="validation", metadata={"help": "Split eval_tasks read from."})
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Draw training batches of similar token length (the lengths the length filter measures; "
                          "answers bucketed by answer_bucket_tokens): little padding. Off = random batches. Only "
                          "replaces the default `train_sampling_strategy: random`."},
    )
    answer_bucket_tokens: int = field(
        default=32,
        metadata={"help": "With group_by_length: rows are grouped by their prompt's exact length plus their answer's "
                          "length rounded up to a multiple of this, so answers whose length gives the class away "
                          "(CRC names, yes/no) do not split batches by class. 1 = exact total lengths."},
    )
    pretokenize: bool = field(
        default=True,
        metadata={"help": "Tokenize every example once before training (in the length pass) and keep its token ids "
                          "and loss mask in memory, so batches only pad them and process the images."},
    )
    pixel_cache_mb: float = field(
        default=1024,
        metadata={"help": "With pretokenize: also keep every example's processed images in memory (per process) "
                          "when a split's fit in this many MB, so images are decoded and processed once, not every "
                          "epoch. 0 = never."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.processor_kwargs, str) and self.processor_kwargs not in ("family", ""):
            try:
                self.processor_kwargs = json.loads(self.processor_kwargs)
            except json.JSONDecodeError as exc:
                raise InputError("processor_kwargs is neither `family` nor JSON", fix='e.g. {"size": ...}') from exc
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}", fix=f"use one of: {', '.join(METHODS)}")
        if self.stage not in STAGES:
            raise InputError(f"unknown stage {self.stage!r}", fix=f"use one of: {', '.join(STAGES)}")
        if self.lora_targets not in LORA_TARGETS:
            raise InputError(f"unknown lora_targets {self.lora_targets!r}", fix=f"use one of: {', '.join(LORA_TARGETS)}")
        vision, projector, language = STAGE_DEFAULTS[self.stage]
        if self.tune_vision_tower is None:
            self.tune_vision_tower = vision
        if self.tune_projector is None:
            self.tune_projector = projector
        if self.tune_language_model is None:
            self.tune_language_model = language
        if self.dataset_config is None:
            self.dataset_config = STAGE_DATASET_CONFIG[self.stage]

    @property
    def uses_lora(self) -> bool:
        return self.method in ("lora", "qlora")


@dataclass
class Recipe:
    """A resolved recipe: our arguments plus the TRL `SFTConfig` handed to `SFTTrainer`."""

    args: RecipeArguments
    sft: Any  # trl.SFTConfig (imported lazily)
    max_length: int | None  # the user's limit; over-long examples are dropped, never truncated
    given: dict[str, Any]  # keys the user set (file + overrides), for the saved recipe

    def to_dict(self) -> dict[str, Any]:
        """Flat, YAML-safe mapping that `load_recipe` turns back into the same recipe.

        Holds all of our fields plus every `SFTConfig` field the user set or we chose for them
        (device defaults); the rest is at its TRL default.
        """
        out: dict[str, Any] = dataclasses.asdict(self.args)
        out["resume"] = False
        # Hardware placement (use_cpu, pin_memory) is re-derived where the recipe is rerun.
        chosen = set(device_defaults()) - {"use_cpu", "dataloader_pin_memory"}
        sft_keys = (set(self.given) | set(_AUTO_KEYS) | chosen) - set(out) - set(_SKIP_ON_SAVE)
        for name in sorted(sft_keys):
            if hasattr(self.sft, name):
                out[name] = getattr(self.sft, name)
        out["max_length"] = self.max_length
        return {k: _plain(v) for k, v in out.items()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=True), encoding="utf-8")
        return path


_AUTO_KEYS = ("bf16", "fp16", "activation_checkpointing", "assistant_only_loss", "output_dir", "seed")
# Deprecated aliases (kept in sync by transformers), secrets and values we override at run time.
_SKIP_ON_SAVE = ("gradient_checkpointing", "gradient_checkpointing_kwargs", "hub_token", "max_length",
                 "logging_dir")
_ALIASES = {"gradient_checkpointing": "activation_checkpointing",
            "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}


def _plain(value: Any) -> Any:
    """Enums, tuples and nested containers to plain YAML values."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return value


def device_defaults() -> dict[str, Any]:
    """bf16 and gradient checkpointing default ON in TRL; only keep them where the hardware helps."""
    import torch

    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    return {
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "activation_checkpointing": cuda,
        # On a CPU-only machine, processes started by torchrun / `accelerate launch` join a gloo group
        # only when transformers is told to use the CPU.
        "use_cpu": not (cuda or mps),
        "dataloader_pin_memory": cuda,
        "assistant_only_loss": True,
        "report_to": "none",
        "save_strategy": "epoch",
        "logging_steps": 10,
    }


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError("recipe file not found", file=path, fix="pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"recipe is not valid YAML: {exc}", file=path) from exc
    if not isinstance(data, dict):
        raise InputError("recipe must be a YAML mapping of field: value", file=path)
    data.pop("env", None)  # TrlParser's environment block is not a field
    return data


def _parser() -> Any:
    from trl import SFTConfig, TrlParser

    return TrlParser((RecipeArguments, SFTConfig))


def field_names() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(RecipeArguments)} | {f.name for f in dataclasses.fields(SFTConfig)}


def _check_keys(values: Mapping[str, Any], source: str) -> None:
    known = field_names()
    unknown = sorted(set(values) - known)
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hint = "; ".join(f"{k} -> {v[0]}?" for k, v in hints.items() if v)
        raise InputError(
            f"unknown recipe field(s): {', '.join(unknown)}",
            file=source,
            fix=(f"did you mean: {hint}" if hint else "see docs/training.md for the recipe fields"),
        )


def _cli_alias(arg: str) -> str:
    if arg.startswith("--"):
        key, sep, value = arg[2:].partition("=")
        key = _ALIASES.get(key.replace("-", "_"), key)
        return f"--{key}{sep}{value}"
    return arg


def _cli_keys(cli_args: Sequence[str]) -> set[str]:
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in cli_args if a.startswith("--")}


def load_recipe(
    source: str | Path | Mapping[str, Any] | Recipe | None = None,
    overrides: Mapping[str, Any] | None = None,
    cli_args: Sequence[str] = (),
) -> Recipe:
    """Resolve a recipe from a YAML path or mapping, Python overrides and `--key value` CLI args."""
    if isinstance(source, Recipe):
        source = source.to_dict()
    file_label = str(source) if isinstance(source, (str, Path)) else "<recipe>"
    values: dict[str, Any] = {}
    if isinstance(source, (str, Path)):
        values = read_recipe_file(source)
    elif source is not None:
        values = dict(source)
    _check_keys(values, file_label)
    overrides = dict(overrides or {})
    _check_keys(overrides, "<overrides>")
    # transformers 5 renamed gradient_checkpointing*; an old name must not lose to our default of the new one.
    given = {_ALIASES.get(k, k): v for k, v in {**values, **overrides}.items()}
    cli_args = [_cli_alias(a) for a in cli_args]

    parser = _parser()
    parser.set_defaults_with_config(**device_defaults())
    parser.set_defaults_with_config(**given)
    try:
        args, sft, *rest = parser.parse_args_into_dataclasses(args=list(cli_args), return_remaining_strings=True)
    except (ValueError, TypeError) as exc:
        raise InputError(f"invalid recipe: {exc}", file=file_label) from exc
    if rest and rest[0]:
        raise InputError(f"unknown command-line option(s): {' '.join(rest[0])}",
                         fix="use --<recipe_field> <value>; see docs/training.md")
    given.update({k: getattr(sft, k, getattr(args, k, None)) for k in _cli_keys(cli_args)})
    return finalize(args, sft, given, file_label)


def finalize(args: RecipeArguments, sft: Any, given: dict[str, Any], label: str) -> Recipe:
    """Cross-field checks; keeps the user's max_length but never lets TRL truncate (image tokens)."""
    if not args.model_name_or_path:
        raise InputError("recipe has no model_name_or_path", file=label, fix="set model_name_or_path: <id or dir>")
    if not args.dataset_name:
        raise InputError("recipe has no dataset_name", file=label, fix="set dataset_name: <PathEnhanceDS dir or id>")
    if "output_dir" not in given:
        raise InputError("recipe has no output_dir", file=label, fix="set output_dir: <directory>")
    if sft.packing or sft.padding_free:
        raise InputError("packing / padding_free are not supported with images", file=label,
                         fix="remove packing and padding_free from the recipe")
    if args.stage == "align" and args.uses_lora:
        raise InputError("stage align trains only the projector", file=label, fix="use method: full for stage align")
    if not (args.tune_vision_tower or args.tune_projector or args.tune_language_model):
        raise InputError("nothing to train: all tune_* flags are false", file=label)
    local = Path(args.model_name_or_path).expanduser()
    if local.is_dir():  # absolute, so the adapter's base_model_name_or_path works from any directory
        args.model_name_or_path = str(local.resolve())
    max_length = sft.max_length
    sft.max_length = None
    return Recipe(args=args, sft=sft, max_length=max_length, given=given)
