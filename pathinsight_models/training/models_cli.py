"""`pathinsight models ...`: tiny offline models, the family registry, merging LoRA adapters."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from pathinsight_models import tiny

    parser = subparsers.add_parser("models", help="model families, tiny test models, LoRA merging")
    sub = parser.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    tiny.add_cli(sub)

    families = sub.add_parser("families", help="list the supported model families and their module layout")
    families.set_defaults(func=_families)

    merge = sub.add_parser("merge", help="merge a trained LoRA adapter into its base model (full weights)")
    merge.add_argument("--adapter", required=True, type=Path, help="training output dir holding the adapter")
    merge.add_argument("--output", required=True, type=Path)
    merge.add_argument("--base", default=None, help="base model dir / id (default: from adapter_config.json)")
    merge.set_defaults(func=_merge)


def _families(args: argparse.Namespace) -> int:
    from pathinsight_models.families import FAMILIES

    for family in FAMILIES.values():
        print(f"{family.name:<11} {family.model_class:<36} e.g. {', '.join(family.examples)}")
        print(f"{'':<11} vision={list(family.vision_tower)} projector={list(family.projector)} "
              f"language={list(family.language_model)}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from pathinsight_models.training.export import merge_adapter

    print(merge_adapter(args.adapter, args.output, base_model=args.base))
    return 0
