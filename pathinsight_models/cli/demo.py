"""`pathinsight demo` (= `make demo`): the whole pipeline offline (see `pathinsight_models.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add `pathinsight demo`."""
    from pathinsight_models.demo import DemoSettings

    demo = subparsers.add_parser("demo", help="run the whole pipeline offline on the synthetic sample")
    demo.add_argument("--output", type=Path, default=DemoSettings.output)
    demo.add_argument("--seed", type=int, default=DemoSettings.seed)
    demo.add_argument("--train-config", default=DemoSettings.train_config,
                      choices=["classification", "captioning", "vqa", "conversation", "all"])
    demo.add_argument("--max-steps", type=int, default=DemoSettings.max_steps)
    demo.add_argument("--eval-limit", type=int, default=None, help="test rows per task (default: all)")
    demo.add_argument("--clip", action="store_true",
                      help="the pathology CLIP demo instead: zero-shot CRC before/after contrastive training of a "
                           "tiny CLIP, then a LLaVA assembled on it answers one question (docs/clip.md)")
    demo.add_argument("--downstream", action="store_true",
                      help="the downstream fine-tuning demo instead: a LoRA adapter trained on the sample is "
                           "continued on an imported ImageFolder with new class names; their macro-F1 rises "
                           "(docs/training.md); --max-steps is then the continuing run's steps")
    demo.add_argument("--knowledge", action="store_true",
                      help="the knowledge-grounded explanation demo instead: synthetic cell patches -> cell graphs, "
                           "GNN, integrated gradients, tables, Q&A -> a tiny LLaVA tuned in two stages "
                           "(docs/knowledge.md; output default demo_knowledge_output)")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """`pathinsight demo`: the whole pipeline offline on the synthetic sample."""
    if getattr(args, "clip", False):
        from pathinsight_models.clip.demo import run_clip_demo

        clip = run_clip_demo(args.output, seed=args.seed)
        return 0 if clip["crc_balanced_accuracy_after"] > clip["crc_balanced_accuracy_before"] else 1
    from pathinsight_models.demo import DemoSettings, run_demo

    if getattr(args, "knowledge", False):
        from pathinsight_models.knowledge.demo import KNOWLEDGE_DEMO_OUTPUT, run_knowledge_demo

        output = args.output if args.output != DemoSettings.output else KNOWLEDGE_DEMO_OUTPUT  # keep `make demo`'s
        summary = run_knowledge_demo(output, seed=args.seed)
        return 0 if summary["gnn_balanced_accuracy"] > summary["chance_balanced_accuracy"] else 1
    if getattr(args, "downstream", False):
        from pathinsight_models.demo_downstream import DownstreamSettings, run_downstream_demo

        steps = args.max_steps if args.max_steps != DemoSettings.max_steps else DownstreamSettings.max_steps
        output = args.output if args.output != DemoSettings.output else DownstreamSettings.output  # keep `make demo`'s
        result = run_downstream_demo(DownstreamSettings(output=output, seed=args.seed, max_steps=steps))
        return 0 if result["improved"] else 1
    summary = run_demo(DemoSettings(output=args.output, seed=args.seed, train_config=args.train_config,
                                    max_steps=args.max_steps, eval_limit=args.eval_limit))
    return 0 if summary["goal_met"] else 1
