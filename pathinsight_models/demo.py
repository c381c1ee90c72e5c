"""`pathinsight demo`: the main job, offline, on the shipped synthetic sample."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="run the pipeline offline on the synthetic sample")
    demo.add_argument("--output", type=Path, default=Path("demo_output"))
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)


def run_demo(output: Path, seed: int = 0) -> dict[str, Any]:
    """Sample → build PathEnhanceDS. Returns the build result's counts."""
    from pathenhanceds.build import build
    from pathenhanceds.cli import format_counts
    from pathenhanceds.sample import write_sample

    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    sources = write_sample(output / "raw", seed=seed)
    result = build(sources, output / "pathenhanceds", seed=seed)
    print(format_counts(result.counts))
    print(f"\nPathEnhanceDS (synthetic) written to {result.output}")
    return result.counts


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.output, args.seed)
    return 0
