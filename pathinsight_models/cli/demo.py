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
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """`pathinsight demo`: the whole pipeline offline on the synthetic sample."""
    from pathinsight_models.demo import DemoSettings, run_demo

    summary = run_demo(DemoSettings(output=args.output, seed=args.seed, train_config=args.train_config,
                                    max_steps=args.max_steps, eval_limit=args.eval_limit))
    return 0 if summary["goal_met"] else 1
