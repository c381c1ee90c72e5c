"""`pathinsight train [--config RECIPE.yaml] [--<field> <value> ...]` and `python -m pathinsight_models.training`.

The arguments are parsed by TRL's own `TrlParser` over TRL's `ScriptArguments`, `ModelConfig` and
`SFTConfig` plus our `RecipeArguments` (see `pathinsight_models.training.recipe`), exactly like
`trl sft`: `pathinsight train --help` lists every field with its help text and default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

PROG = "pathinsight train"
DESCRIPTION = """Fine-tune a vision-language model on PathEnhanceDS (or an imported dataset) with TRL's SFTTrainer:
LoRA, QLoRA or full fine-tuning. Fields come from TRL's ScriptArguments, ModelConfig and SFTConfig
(every transformers TrainingArguments field) plus PathInsight's own (method, stage, tune_*, adapter, ...).
A recipe YAML (--config FILE) sets any of them; command-line fields win over it.

--model_name_or_path may be a base or merged model, or a LoRA adapter (directory or Hub repo with
adapter_config.json): its base model is loaded and the same adapter keeps training. --adapter A merges
adapter A into the model first, then trains a new adapter (--method lora) or the merged weights
(--method full). See docs/training.md."""

EPILOG = """examples:
  pathinsight train --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset_name ./PathEnhanceDS \\
      --output_dir runs/lora --method lora --learning_rate 2e-4 --num_train_epochs 1
  pathinsight train --config recipes/qwen25vl_7b_lora.yaml --learning_rate 2e-5 --max_steps 100
  pathinsight train --config recipes/llava15_7b_lora.yaml --resume
  pathinsight train --model_name_or_path ORG/pathinsight-adapter --dataset_name ./my_data \\
      --dataset_config classification --output_dir runs/mine          # continue a published adapter
  pathinsight train --model_name_or_path llava-hf/llava-1.5-7b-hf --adapter ORG/pathinsight-adapter \\
      --method lora --dataset_name ./my_data --output_dir runs/stacked  # new adapter on the merged one
  accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m pathinsight_models.training --config R.yaml"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pathinsight train`; its arguments are handed verbatim to TRL's parser (see `parse_and_train`)."""
    # A NUL prefix means no argument looks like an option to argparse here, so `--learning_rate 1e-5`,
    # `--help` etc. all reach `TrlParser`, which owns help, types, choices and unknown-field errors.
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a VLM (TRL SFT: LoRA / QLoRA / full), from a recipe and/or --<field> <value> arguments",
        add_help=False,
        prefix_chars="\0",
    )
    parser.add_argument("arguments", nargs="*", help="TRL / PathInsight fields; see `pathinsight train --help`")
    parser.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    """TRL's parser for `pathinsight train` (help text, every field with its default, `--config`)."""
    from pathinsight_models.training.recipe import recipe_parser

    parser = recipe_parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    # Listed for --help only: `load_recipe` takes `--config FILE` out before the fields are parsed.
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="recipe YAML of field: value lines (recipes/*.yaml); command-line fields win over it")
    return parser


def parse_and_train(argv: Sequence[str]) -> int:
    """Parse `argv` with TRL's parser (help exits 0) and train; prints the output directory."""
    from pathinsight_models.training.recipe import load_recipe
    from pathinsight_models.training.trainer import run

    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe = load_recipe(None, cli_args=argv)
    print(run(recipe))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`pathinsight train`: fine-tune from TRL-style fields and/or a recipe file."""
    return parse_and_train(args.arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pathinsight_models.training` (what `accelerate launch -m` runs): same arguments."""
    from . import run_command

    arguments = sys.argv[1:] if argv is None else list(argv)
    return run_command(lambda: parse_and_train(arguments))  # same error contract as `pathinsight`
