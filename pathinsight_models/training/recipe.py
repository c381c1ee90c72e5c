"""Training recipes: one flat YAML file / command line over TRL's own argument dataclasses.

The fields are those of TRL's `ScriptArguments` (dataset), `ModelConfig` (model, LoRA, quantisation)
and `SFTConfig` (every `transformers.TrainingArguments` field too), plus `RecipeArguments`: only the
fields TRL has no equivalent for (method, stage, per-component training, adapters to continue or
stack on, PathInsight data options). One `trl.TrlParser` over those four dataclasses parses them, so
`pathinsight train --learning_rate 2e-5 ...` reads exactly like `trl sft ...`.

Layers, lowest priority first: our defaults (device-dependent bf16 / gradient checkpointing, see
`pathinsight_defaults`), the YAML file (`--config FILE`, or a path / mapping in Python), Python
keyword overrides, then `--key value` command-line arguments.
"""

from __future__ import annotations

import argparse
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
    """PathInsight's own training fields; the rest are TRL's `ScriptArguments`, `ModelConfig`, `SFTConfig`."""

    family: str | None = field(
        default=None, metadata={"help": "Force a model family (default: detected from the model config)."}
    )
    adapter: str | None = field(
        default=None,
        metadata={"help": "A LoRA adapter (directory or Hub id) merged into model_name_or_path before training: "
                          "the run then stacks a new adapter (method lora) or fine-tunes the merged weights "
                          "(method full). To continue training the SAME adapter, pass it as model_name_or_path."},
    )
    adapter_revision: str | None = field(default=None, metadata={"help": "Hub revision of --adapter."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (smoke runs)."}
    )
    method: str | None = field(
        default=None,
        metadata={"help": "lora | qlora | full (default: qlora with --load_in_4bit, else lora; TRL's --use_peft "
                          "means lora)", "choices": list(METHODS)},
    )
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
    lora_targets: str = field(
        default="auto",
        metadata={"help": "auto (from the tune_* flags) | language | vision_language | all_linear; "
                          "--lora_target_modules overrides it",
                  "choices": list(LORA_TARGETS)},
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
        if self.method is not None and self.method not in METHODS:
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

    @property
    def uses_lora(self) -> bool:
        """True for the lora and qlora methods."""
        return self.method in ("lora", "qlora")


@dataclass
class Recipe:
    """A resolved recipe: TRL's `ScriptArguments`, `ModelConfig`, `SFTConfig` and our `RecipeArguments`."""

    args: RecipeArguments
    sft: Any  # trl.SFTConfig (imported lazily)
    max_length: int | None  # the user's limit; over-long examples are dropped, never truncated
    given: dict[str, Any]  # keys the user set (file + overrides), for the saved recipe
    script: Any = None  # trl.ScriptArguments: dataset name, config, splits
    model: Any = None  # trl.ModelConfig: model id, revision, dtype, LoRA and quantisation settings

    def to_dict(self) -> dict[str, Any]:
        """Flat, YAML-safe mapping that `load_recipe` turns back into the same recipe.

        Holds all of our, `ScriptArguments` and `ModelConfig` fields plus every `SFTConfig` field the
        user set or we chose for them (device defaults); the rest is at its TRL default.
        """
        out: dict[str, Any] = {**dataclasses.asdict(self.script), **dataclasses.asdict(self.model),
                               **dataclasses.asdict(self.args)}
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
        """Write the resolved recipe as YAML to `path`; returns the path."""
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


def load_yaml_file(path: Path, *, what: str = "YAML file") -> Any:
    """The YAML document in `path`; bad bytes or syntax are an `InputError` naming the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the {what} ({exc.strerror})", file=path, fix="pass a readable YAML file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"the {what} is not valid UTF-8 (line {line})", file=path, record=f"line {line}",
                         fix="save the file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"the {what} is not valid YAML ({problem}" + (f", line {line})" if line else ")"),
                         file=path, record=None if line is None else f"line {line}",
                         fix="fix the YAML syntax at that line (indentation, quotes, `key: value`)") from None
    except RecursionError:
        raise InputError(f"the {what} is nested too deeply", file=path, fix="flatten the YAML") from None


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a recipe YAML file; an InputError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("recipe file not found", file=path, fix="pass an existing YAML file to --config")
    data = load_yaml_file(path, what="recipe")
    if not isinstance(data, dict):
        raise InputError("recipe must be a YAML mapping of field: value", file=path,
                         fix="write one `field: value` per line (see recipes/*.yaml)")
    data.pop("env", None)  # TrlParser's environment block is not a field
    return data


def argument_classes() -> tuple[type, ...]:
    """The dataclasses `pathinsight train` parses: TRL's `ScriptArguments`, `ModelConfig`, `SFTConfig`, ours."""
    from trl import ModelConfig, ScriptArguments, SFTConfig

    return (ScriptArguments, ModelConfig, SFTConfig, RecipeArguments)


# Where our defaults differ from TRL's, and why: dtype None = bf16 for LoRA when bf16 is on, else fp32
# (TRL: float32); QLoRA double quantisation saves ~0.4 bit/parameter at no cost in quality.
_TRL_DEFAULTS_CHANGED = {"dtype": None, "use_bnb_nested_quant": True}


def pathinsight_defaults() -> dict[str, Any]:
    """Defaults we set over TRL's (device-dependent ones included); shown as such by `--help`."""
    return {**device_defaults(), **_TRL_DEFAULTS_CHANGED}


def recipe_parser(prog: str | None = None, **kwargs: Any) -> Any:
    """TRL's `TrlParser` over `argument_classes()`, with our defaults; no abbreviations of field names.

    `--config FILE` is not a field: `load_recipe` (like `TrlParser.parse_args_and_config`) takes it
    out of the arguments first.
    """
    from trl import TrlParser

    parser = TrlParser(argument_classes(), prog=prog, allow_abbrev=False, exit_on_error=False, **kwargs)
    parser.set_defaults_with_config(**pathinsight_defaults())
    return parser


def _parser() -> Any:
    return recipe_parser()


def field_names() -> set[str]:
    """Every key a recipe may set (TRL's ScriptArguments, ModelConfig, SFTConfig fields and ours)."""
    return {f.name for cls in argument_classes() for f in dataclasses.fields(cls)}


def closest_field(name: str) -> str | None:
    """The valid field name closest to `name` (for "did you mean" hints), or None."""
    match = difflib.get_close_matches(name.replace("-", "_"), field_names(), n=1, cutoff=0.6)
    return match[0] if match else None


def _check_keys(values: Mapping[str, Any], source: str) -> None:
    known = field_names()
    unknown = sorted(set(values) - known)
    if unknown:
        hints = {k: closest_field(k) for k in unknown}
        hint = "; ".join(f"{k} -> {v}?" for k, v in hints.items() if v)
        raise InputError(
            f"unknown recipe field(s): {', '.join(unknown)}",
            file=source,
            fix=(f"did you mean: {hint}" if hint else "see docs/training.md for the recipe fields"),
        )


def split_config_arg(cli_args: Sequence[str]) -> tuple[str | None, list[str]]:
    """(`--config` value or None, the other arguments): TRL's `--config FILE` convention, `=` form too."""
    rest: list[str] = []
    config: str | None = None
    items = list(cli_args)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--config":
            if i + 1 >= len(items):
                raise InputError("--config needs a file", fix="--config recipes/<name>.yaml")
            config = items[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return config, rest


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
    """Resolve a recipe from a YAML path or mapping, Python overrides and `--key value` CLI args.

    `cli_args` may hold `--config FILE` (TRL's convention) when `source` is None. Unknown fields are
    errors that name the closest valid field.
    """
    config, cli_args = split_config_arg(cli_args)
    if config is not None:
        if source is not None:
            raise InputError("a recipe was given twice (a source and --config)", fix="pass one of them")
        source = config
    if isinstance(source, Recipe):
        source = source.to_dict()
    file_label = str(source) if isinstance(source, (str, Path)) else ("<command line>" if source is None else "<recipe>")
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
    parser.set_defaults_with_config(**given)
    try:
        script, model, sft, args, *rest = parser.parse_args_into_dataclasses(
            args=list(cli_args), return_remaining_strings=True)
    except argparse.ArgumentError as exc:
        raise InputError(f"invalid argument: {exc}", file=file_label,
                         fix="see `pathinsight train --help` for each field's type and choices") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"invalid recipe: {exc}", file=file_label) from exc
    if rest and rest[0]:
        raise unknown_arguments_error(rest[0])
    parsed = (script, model, sft, args)
    given.update({k: next((getattr(d, k) for d in parsed if hasattr(d, k)), None) for k in _cli_keys(cli_args)})
    return finalize(args, sft, given, file_label, script=script, model=model)


def unknown_arguments_error(remaining: Sequence[str]) -> InputError:
    """An InputError for command-line arguments no field takes, naming the closest valid field."""
    flags = [a for a in remaining if a.startswith("-")]
    if not flags:
        return InputError(f"unknown command-line value(s): {' '.join(remaining)}",
                          fix="every value follows its field: --<field> <value>")
    hints = [(f, closest_field(f.lstrip("-").split("=", 1)[0])) for f in flags]
    hint = "; ".join(f"{f} -> --{h}?" for f, h in hints if h)
    return InputError(f"unknown field(s): {', '.join(flags)}",
                      fix=(f"did you mean: {hint}" if hint else "see `pathinsight train --help` for every field"))


def resolve_method(args: RecipeArguments, model: Any, label: str) -> str:
    """lora | qlora | full from `method` and TRL's `use_peft` / `load_in_4bit`; contradictions are errors."""
    if model.load_in_8bit:
        raise InputError("8-bit base weights are not supported", file=label,
                         fix="use method: qlora (4-bit) or lora")
    method = args.method or ("qlora" if model.load_in_4bit else "lora")
    if method == "full" and (model.use_peft or model.load_in_4bit):
        raise InputError("method full contradicts use_peft / load_in_4bit", file=label,
                         fix="drop use_peft / load_in_4bit, or use method: lora / qlora")
    if method == "lora" and model.load_in_4bit:
        raise InputError("load_in_4bit with method lora", file=label, fix="use method: qlora for 4-bit base weights")
    return method


def finalize(args: RecipeArguments, sft: Any, given: dict[str, Any], label: str, *, script: Any,
             model: Any) -> Recipe:
    """Cross-field checks; keeps the user's max_length but never lets TRL truncate (image tokens)."""
    if not model.model_name_or_path:
        raise InputError("recipe has no model_name_or_path", file=label, fix="set model_name_or_path: <id or dir>")
    if not script.dataset_name:
        raise InputError("recipe has no dataset_name", file=label, fix="set dataset_name: <PathEnhanceDS dir or id>")
    if "output_dir" not in given:
        raise InputError("recipe has no output_dir", file=label, fix="set output_dir: <directory>")
    if script.dataset_streaming:
        raise InputError("dataset_streaming is not supported (examples are measured and cached first)",
                         file=label, fix="drop dataset_streaming")
    args.method = resolve_method(args, model, label)
    model.use_peft, model.load_in_4bit = args.uses_lora, args.method == "qlora"
    if script.dataset_config is None:
        script.dataset_config = STAGE_DATASET_CONFIG[args.stage]
    if sft.packing or sft.padding_free:
        raise InputError("packing / padding_free are not supported with images", file=label,
                         fix="remove packing and padding_free from the recipe")
    if args.stage == "align" and args.uses_lora:
        raise InputError("stage align trains only the projector", file=label, fix="use method: full for stage align")
    if not (args.tune_vision_tower or args.tune_projector or args.tune_language_model):
        raise InputError("nothing to train: all tune_* flags are false", file=label)
    local = Path(model.model_name_or_path).expanduser()
    if local.is_dir():  # absolute, so the adapter's base_model_name_or_path works from any directory
        model.model_name_or_path = str(local.resolve())
    if args.adapter and Path(args.adapter).expanduser().is_dir():
        args.adapter = str(Path(args.adapter).expanduser().resolve())
    max_length = sft.max_length
    sft.max_length = None
    return Recipe(args=args, sft=sft, max_length=max_length, given=given, script=script, model=model)
