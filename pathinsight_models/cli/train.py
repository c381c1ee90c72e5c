"""`pathinsight train --config RECIPE.yaml [--key value ...] [--resume]` and `python -m pathinsight_models.training`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EPILOG = """examples:
  pathinsight train --config recipes/llava15_7b_lora.yaml
  pathinsight train --config recipes/qwen25vl_7b_lora.yaml --learning_rate 2e-5 --max_steps 100
  pathinsight train --config recipes/llava15_7b_lora.yaml --resume
  accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m pathinsight_models.training --config R.yaml

Any recipe field (see docs/training.md) or TRL SFTConfig / transformers TrainingArguments field can be
overridden as --<field> <value>."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pathinsight train`."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a VLM on PathEnhanceDS from a recipe (TRL SFT: LoRA / QLoRA / full)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # argparse would reject `--learning_rate 1e-5` as unknown; this subclass hands such options on.
    parser.__class__ = _OverridesParser
    _add_arguments(parser)
    parser.set_defaults(func=cmd_train)


class _OverridesParser(argparse.ArgumentParser):
    """Collects options it does not know into `overrides`; TRL's parser checks their names and types."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.overrides = list(getattr(namespace, "overrides", None) or []) + list(extras)
        return namespace, []


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="recipe YAML file")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")


def cmd_train(args: argparse.Namespace) -> int:
    """`pathinsight train`: fine-tune from a recipe with command-line overrides."""
    from pathinsight_models.training.trainer import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"resume": True} if args.resume else {}
    out = train(args.config, cli_args=list(args.overrides or []), **overrides)
    print(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pathinsight_models.training` (what `accelerate launch -m` runs)."""
    from pathenhanceds.errors import InputError

    parser = _OverridesParser(prog="python -m pathinsight_models.training", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return cmd_train(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
