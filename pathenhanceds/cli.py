"""`pathinsight data ...`: sample, build, stats."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .errors import InputError

# Modules adding more `data` subcommands through `register_data_commands(sub)`.
EXTRA_COMMAND_MODULES: list[str] = ["pathenhanceds.filters.cli", "pathenhanceds.export.formats_cli"]


def _source_arg(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    return name.strip(), path


def default_num_proc() -> int:
    import os

    return max(1, min(len(os.sched_getaffinity(0)), 8))


def register(subparsers: Any) -> None:
    from .recipes import OPTIONS, RECIPES

    data = subparsers.add_parser("data", help="build and inspect PathEnhanceDS")
    sub = data.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sample = sub.add_parser("sample", help="write a small synthetic raw-source tree (native formats)")
    sample.add_argument("--output", required=True, type=Path)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--overwrite", action="store_true")
    sample.set_defaults(func=cmd_sample)

    build = sub.add_parser("build", help="build PathEnhanceDS from downloaded raw sources")
    build.add_argument("--source", action="append", type=_source_arg, default=[], metavar="NAME=PATH",
                       help="a raw source and where it was downloaded (repeat)")
    build.add_argument("--sources-dir", type=Path, help="a folder with one subfolder per source name")
    build.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--output", required=True, type=Path)
    build.add_argument("--num-proc", type=int, default=default_num_proc(),
                       help="worker processes for image encoding (default: available cores, at most 8)")
    build.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    build.add_argument("--overwrite", action="store_true")
    build.add_argument("--scores", type=Path, help="image scores from `pathinsight data score` (paper filters)")
    build.add_argument("--dedup-against", type=Path, action="append", default=[], metavar="PATH",
                       help="benchmark images (folder or parquet) no train row may duplicate (repeat)")
    build.add_argument("--near-dup-threshold", type=int, default=None, metavar="BITS",
                       help="also drop near duplicates within this phash distance (0-64; default: exact only)")
    for opt in OPTIONS.values():
        build.add_argument(f"--{opt.name.replace('_', '-')}", dest=f"opt_{opt.name}", type=type(opt.default),
                           default=None, help=f"{opt.help} (default {opt.default})")
    build.set_defaults(func=cmd_build)

    stats = sub.add_parser("stats", help="print the counts table of a built dataset")
    stats.add_argument("path", type=Path)
    stats.set_defaults(func=cmd_stats)

    import importlib

    for module in EXTRA_COMMAND_MODULES:
        importlib.import_module(module).register_data_commands(sub)


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample import write_sample

    paths = write_sample(args.output, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote synthetic sources to {args.output}: {', '.join(paths)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build, discover_sources

    sources: dict[str, Any] = dict(discover_sources(args.sources_dir)) if args.sources_dir else {}
    for name, path in args.source:
        if name in sources and args.sources_dir is None:
            raise InputError(f"source {name!r} given twice", fix="pass each --source once")
        sources[name] = path
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    result = build(sources, args.output, recipe=args.recipe, seed=args.seed, options=options,
                   num_proc=args.num_proc, on_error=args.on_error, overwrite=args.overwrite,
                   scores=args.scores, dedup_against=args.dedup_against, near_dup_threshold=args.near_dup_threshold)
    print(format_counts(result.counts))
    print(f"\nwrote {result.output} (digest {result.digest[:16]}…)")
    for warning in result.manifest["warnings"]:
        print(f"warning: {warning}")
    removed = result.manifest["dedup"]["rows_removed_total"]
    if removed:
        print(f"removed {removed} train row(s) duplicating held-out images; see the card's dedup section")
    if result.manifest["skipped"]:
        print(f"skipped {len(result.manifest['skipped'])} bad record(s); see manifest.json")
    return 0


def format_counts(counts: dict[str, dict[str, dict[str, int]]]) -> str:
    """The counts table: source × config rows, split columns."""
    from .schema import SPLITS

    lines = [f"{'config':<15}{'source':<20}" + "".join(f"{s:>12}" for s in SPLITS)]
    totals = dict.fromkeys(SPLITS, 0)
    for cfg, by_split in counts.items():
        for src in sorted({s for d in by_split.values() for s in d}):
            values = [by_split.get(s, {}).get(src, 0) for s in SPLITS]
            for s, v in zip(SPLITS, values, strict=True):
                totals[s] += v
            lines.append(f"{cfg:<15}{src:<20}" + "".join(f"{v:>12}" for v in values))
    lines.append(f"{'total':<35}" + "".join(f"{totals[s]:>12}" for s in SPLITS))
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    manifest = args.path / "manifest.json"
    if not manifest.exists():
        raise InputError("no manifest.json: not a PathEnhanceDS build", file=args.path,
                         fix="pass the --output folder of `pathinsight data build`")
    data = json.loads(manifest.read_text())
    print(format_counts(data["counts"]))
    print(f"\nrecipe {data['recipe']}, seed {data['seed']}, digest {data['digest'][:16]}…")
    return 0
