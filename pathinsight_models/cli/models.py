"""`pathinsight models ...`: tiny offline models, the family registry, merging LoRA adapters."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `models` group: tiny, families, merge."""

    parser = subparsers.add_parser("models", help="model families, tiny test models, LoRA merging")
    sub = parser.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    _add_tiny(sub)

    families = sub.add_parser("families", help="list the supported model families and their module layout")
    families.set_defaults(func=cmd_families)

    merge = sub.add_parser("merge", help="merge a trained LoRA adapter into its base model (full weights)")
    merge.add_argument("--adapter", required=True, type=Path, help="training output dir holding the adapter")
    merge.add_argument("--output", required=True, type=Path)
    merge.add_argument("--base", default=None, help="base model dir / id (default: from adapter_config.json)")
    merge.set_defaults(func=cmd_merge)

    from pathinsight_models.cli.clip import add_assemble

    add_assemble(sub)


def cmd_families(args: argparse.Namespace) -> int:
    """`pathinsight models families`: the supported families and their module layout."""
    from pathinsight_models.families import FAMILIES

    for family in FAMILIES.values():
        tiny = " (tiny factory: `pathinsight models tiny`)" if family.tiny else ""
        print(f"{family.name:<11} {family.model_class:<36} e.g. {', '.join(family.examples)}{tiny}")
        print(f"{'':<11} vision={list(family.vision_tower)} projector={list(family.projector)} "
              f"language={list(family.language_model)}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """`pathinsight models merge`: merge a LoRA adapter into its base model."""
    from pathinsight_models.training.artifacts import merge_adapter

    print(merge_adapter(args.adapter, args.output, base_model=args.base))
    return 0


def _add_tiny(sub: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    from pathinsight_models.families import tiny_families
    from pathinsight_models.tiny import TinySpec

    p = sub.add_parser("tiny", help="save a tiny random model + processor of a family (offline, for tests/demos)")
    p.add_argument("--family", required=True, choices=tiny_families())
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    for f in fields(TinySpec):  # every size knob, e.g. --image-size 32 --patch-size 4 --hidden-size 64
        p.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default, dest=f.name)
    p.set_defaults(func=cmd_tiny)


def cmd_tiny(args: argparse.Namespace) -> int:
    """`pathinsight models tiny`: save a tiny random model + processor of a family."""
    from dataclasses import fields

    from pathinsight_models.tiny import TinySpec, save_tiny_model

    spec = {f.name: getattr(args, f.name) for f in fields(TinySpec)}
    print(save_tiny_model(args.family, args.output, seed=args.seed, **spec))
    return 0
