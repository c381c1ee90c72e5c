"""`pathinsight clip tiny|train|eval|convert|prompts`: pathology CLIP models (library: `pathinsight_models.clip`),
and `add_assemble(sub)` for `pathinsight models assemble`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

TRAIN_EPILOG = """examples:
  pathinsight clip train --model_name_or_path tiny-clip --dataset_name ./PathEnhanceDS --output_dir out/clip \\
      --class_captions true --max_steps 200 --per_device_train_batch_size 32 --learning_rate 1e-4
  pathinsight clip train --config clip.yaml --lock_image_tower true --method lora
  pathinsight clip train --config clip.yaml --resume true

Options are `ClipArguments` fields (docs/clip.md) and any transformers TrainingArguments field."""


class _PassThroughParser(argparse.ArgumentParser):
    """Collects unknown options for `HfArgumentParser`, which checks their names and types."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.options = list(getattr(namespace, "options", None) or []) + list(extras)
        return namespace, []


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pathinsight clip` with `tiny`, `train`, `eval`, `convert` and `prompts`."""
    from pathinsight_models.clip.tiny import KINDS, spec_fields

    parser = subparsers.add_parser("clip", help="pathology CLIP: tiny models, contrastive training, zero-shot eval")
    sub = parser.add_subparsers(dest="clip_command", metavar="COMMAND", required=True)

    tiny = sub.add_parser("tiny", help="save a tiny random CLIPModel / SiglipModel + processor (offline)")
    tiny.add_argument("--kind", choices=KINDS, default="clip")
    tiny.add_argument("--output", required=True, type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it is an earlier output of `clip tiny` (never any other folder)")
    for name, default in spec_fields():
        tiny.add_argument("--" + name.replace("_", "-"), type=int, default=default, dest=name)
    tiny.set_defaults(func=cmd_tiny)

    train = sub.add_parser("train", help="contrastive training of a CLIP/SigLIP on PathEnhanceDS image-text pairs",
                           epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.__class__ = _PassThroughParser
    train.add_argument("--config", type=Path, default=None, help="YAML with ClipArguments/TrainingArguments fields")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="zero-shot classification, retrieval and linear probe of a CLIP model")
    ev.add_argument("--model", required=True, help="transformers CLIP/SigLIP dir or id, or open_clip hf-hub:/dir")
    ev.add_argument("--data", required=True, help="PathEnhanceDS directory or Hub id")
    ev.add_argument("--tasks", required=True,
                    help="comma-separated prompt-set names or YAML files, and/or `retrieval` (e.g. crc100k,pcam)")
    ev.add_argument("--output", required=True, type=Path)
    ev.add_argument("--split", default="test")
    ev.add_argument("--linear_probe", action="store_true", help="also fit a linear probe per zero-shot task")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    ev.add_argument("--limit", type=int, default=None, help="at most this many rows per task (smoke runs)")
    ev.add_argument("--batch_size", type=int, default=64)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it is an earlier output of `clip eval` (never any other folder)")
    ev.set_defaults(func=cmd_eval)

    conv = sub.add_parser("convert", help="convert an open_clip plain-ViT CLIP to a transformers CLIPModel folder")
    conv.add_argument("--model", required=True, help="open_clip model: hf-hub:ORG/NAME, local-dir:PATH or a folder")
    conv.add_argument("--output", required=True, type=Path)
    conv.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it is an earlier output of `clip convert` (never any other folder)")
    conv.set_defaults(func=cmd_convert)

    prompts = sub.add_parser("prompts", help="list the shipped zero-shot prompt sets")
    prompts.set_defaults(func=cmd_prompts)


def cmd_tiny(args: argparse.Namespace) -> int:
    """`pathinsight clip tiny`: save a tiny random CLIP/SigLIP."""
    from pathinsight_models.clip.tiny import save_tiny_clip, spec_fields

    spec = {name: getattr(args, name) for name, _ in spec_fields()}
    print(save_tiny_clip(args.kind, args.output, seed=args.seed, overwrite=args.overwrite, **spec))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`pathinsight clip train`: contrastive training (transformers Trainer)."""
    from pathinsight_models.clip.train import train_clip

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(train_clip(args.config, cli_args=list(args.options or [])))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """`pathinsight clip eval`: write results.json, per-class CSVs and confusion PNGs; print a summary."""
    from pathinsight_models.clip.evaluate import evaluate_clip

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    results = evaluate_clip(args.model, args.data, tasks, args.output, split=args.split,
                            linear_probe_tasks=args.linear_probe, n_resamples=args.bootstrap, seed=args.seed,
                            limit=args.limit, batch_size=args.batch_size, overwrite=args.overwrite)
    for name, entry in results["tasks"].items():
        if "zero_shot" in entry:
            zs = entry["zero_shot"]
            line = f"{name:<14} zero-shot acc {zs['accuracy']:.4f}  bal-acc {zs['balanced_accuracy']:.4f}  " \
                   f"w-F1 {zs['weighted_f1']:.4f}  (n={zs['n']})"
            if "linear_probe" in entry:
                line += f"  probe bal-acc {entry['linear_probe']['balanced_accuracy']:.4f}"
            print(line)
        else:
            print(f"{name:<14} " + "  ".join(f"{k} {v:.4f}" for k, v in entry.items() if "_R@" in k))
    print(Path(args.output) / "results.json")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """`pathinsight clip convert`: an open_clip plain ViT as a transformers CLIP folder (AutoModel/AutoProcessor)."""
    from pathinsight_models.clip.open_clip import convert_open_clip

    print(convert_open_clip(args.model, args.output, overwrite=args.overwrite))
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    """`pathinsight clip prompts`: the shipped prompt sets."""
    from pathinsight_models.clip.zeroshot import PROMPT_SETS

    for name, prompts in PROMPT_SETS.items():
        print(json.dumps({"name": name, "classes": len(prompts.classes), "templates": len(prompts.templates),
                          "source": prompts.source, "description": prompts.description}))
    return 0


def add_assemble(sub: argparse._SubParsersAction) -> None:
    """Add `assemble` to the `pathinsight models` group."""
    from pathinsight_models.clip.assemble import PROJECTORS

    p = sub.add_parser("assemble", help="build a LLaVA model from a CLIP/SigLIP vision tower and a causal LM")
    p.add_argument("--vision", required=True, help="CLIPModel/SiglipModel dir or id, or an open_clip plain ViT")
    p.add_argument("--language", required=True, help="causal LM dir or id (e.g. lmsys/vicuna-7b-v1.5)")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--projector", choices=PROJECTORS, default="mlp2x_gelu")
    p.add_argument("--vision_feature_layer", type=int, default=-2)
    p.add_argument("--image_size", type=int, default=None, help="default: the tower's (others interpolate positions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it is an earlier output of `models assemble` (never any other folder)")
    p.set_defaults(func=cmd_assemble)


def cmd_assemble(args: argparse.Namespace) -> int:
    """`pathinsight models assemble`: save a LLaVA model (loads with AutoModelForImageTextToText)."""
    from pathinsight_models.clip.assemble import assemble_llava

    print(assemble_llava(args.vision, args.language, args.output, projector=args.projector,
                         vision_feature_layer=args.vision_feature_layer, image_size=args.image_size, seed=args.seed,
                         overwrite=args.overwrite))
    return 0
