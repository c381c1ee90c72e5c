"""`pathinsight data ...`: sample, build, stats, score, export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError


def _source_arg(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    return name.strip(), path


def default_num_proc() -> int:
    """Worker processes by default: the cores this process may use, at most 8."""
    import os

    return max(1, min(len(os.sched_getaffinity(0)), 8))


def register(subparsers: Any) -> None:
    """Add the `data` group and its subcommands."""
    from pathenhanceds.recipes import OPTIONS, RECIPES

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
    _add_score(sub)
    _add_export(sub)


def cmd_sample(args: argparse.Namespace) -> int:
    """`pathinsight data sample`: write the synthetic raw-source tree."""
    from pathenhanceds.sample import write_sample

    paths = write_sample(args.output, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote synthetic sources to {args.output}: {', '.join(paths)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """`pathinsight data build`: build PathEnhanceDS and print its counts table."""
    from pathenhanceds.build import build, discover_sources
    from pathenhanceds.stats import format_counts

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




def cmd_stats(args: argparse.Namespace) -> int:
    """`pathinsight data stats`: the counts table of a built dataset."""
    from pathenhanceds.stats import format_counts

    manifest = args.path / "manifest.json"
    if not manifest.exists():
        raise InputError("no manifest.json: not a PathEnhanceDS build", file=args.path,
                         fix="pass the --output folder of `pathinsight data build`")
    data = json.loads(manifest.read_text())
    print(format_counts(data["counts"]))
    print(f"\nrecipe {data['recipe']}, seed {data['seed']}, digest {data['digest'][:16]}…")
    return 0


def _add_score(sub: Any) -> None:
    from pathenhanceds.filters.scorers import DEFAULT_MODEL
    from pathenhanceds.filters.scores_file import HE_THRESHOLD

    score = sub.add_parser(
        "score", help="score source images with BiomedCLIP (P(H&E), image-caption similarity) for --scores",
        description="Writes one row per record (image_sha256, source, record_id, subset, p_he, similarity) with "
        "the model id, prompts and threshold in the parquet metadata.",
    )
    score.add_argument("--source", action="append", type=_source_arg, default=[], metavar="NAME=PATH",
                       help="a raw source and where it was downloaded (repeat)")
    score.add_argument("--sources-dir", type=Path, help="a folder with one subfolder per source name")
    score.add_argument("--subset", action="append", default=None, metavar="NAME",
                       help="score only records of this source subset, e.g. textbook (repeat)")
    score.add_argument("--output", required=True, type=Path, help="the scores parquet file to write")
    score.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"hf-hub:ORG/NAME (Hub or HF_HOME cache) or a local open_clip folder (default {DEFAULT_MODEL})")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--threshold", type=float, default=HE_THRESHOLD,
                       help=f"P(H&E) threshold recorded in the file and used for the summary (default {HE_THRESHOLD})")
    score.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    score.add_argument("--no-similarity", action="store_true", help="skip image-caption similarity")
    score.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    score.add_argument("--overwrite", action="store_true")
    score.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    """`pathinsight data score`: BiomedCLIP scores of source images → a scores parquet file."""
    from pathenhanceds.build import discover_sources, open_sources
    from pathenhanceds.filters.scorers import HEScorer, SimilarityScorer, load_open_clip, score_sources
    from pathenhanceds.filters.scores_file import write_scores
    from pathenhanceds.sources import BuildContext

    if args.output.exists() and not args.overwrite:
        raise InputError("scores file already exists", file=args.output, fix="pass --overwrite or choose another --output")
    paths: dict[str, Any] = dict(discover_sources(args.sources_dir)) if args.sources_dir else {}
    for name, path in args.source:
        if name in paths and args.sources_dir is None:
            raise InputError(f"source {name!r} given twice", fix="pass each --source once")
        paths[name] = path
    sources = open_sources(paths)
    try:
        encoder = load_open_clip(args.model, device=args.device)
        run = score_sources(
            sources, he=HEScorer(encoder), similarity=None if args.no_similarity else SimilarityScorer(encoder),
            batch_size=args.batch_size, ctx=BuildContext(on_error=args.on_error),
            subsets=set(args.subset) if args.subset else None, threshold=args.threshold,
        )
    finally:
        for source in sources.values():
            source.close()
    write_scores(run.table, args.output, overwrite=args.overwrite)
    kept = sum(1 for sha in run.table.shas() if (run.table.p_he(sha) or 0.0) > args.threshold)
    with_sim = sum(1 for r in run.table.rows if r.similarity is not None)
    print(f"scored {len(run.table)} record(s), {run.images} image(s) with {run.table.model_id}")
    print(f"P(H&E) > {args.threshold}: {kept} of {len(run.table.shas())} image(s); "
          f"image-caption similarity for {with_sim} record(s)")
    if run.skipped:
        print(f"skipped {len(run.skipped)} unreadable record(s)")
    print(f"wrote {args.output}")
    return 0


def _add_export(sub: Any) -> None:
    from pathenhanceds.export.formats import FORMATS
    from pathenhanceds.schema import SPLITS

    export = sub.add_parser(
        "export", help="write a built split as LLaVA, Qwen-VL or ShareGPT (LLaMA-Factory) JSON plus image files",
        description="Formats: " + "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()),
    )
    export.add_argument("dataset", type=Path, help="the built dataset folder (`pathinsight data build --output`)")
    export.add_argument("--format", required=True, choices=sorted(FORMATS))
    export.add_argument("--config", default="all", help="captioning | classification | vqa | conversation | all")
    export.add_argument("--split", default="train", help=f"one of {', '.join(SPLITS)} (default train)")
    export.add_argument("--output", required=True, type=Path, help="folder to write (JSON + images/)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """`pathinsight data export`: a built split → LLaVA / Qwen-VL / ShareGPT JSON plus images."""
    from pathenhanceds.export.formats import export_dataset

    result = export_dataset(args.dataset, args.format, args.output, config=args.config, split=args.split,
                            overwrite=args.overwrite)
    print(f"wrote {result.rows} row(s) and {result.images} image(s) to {result.output}")
    print(f"data file: {result.data_file.name}" + (" (+ dataset_info.json for LLaMA-Factory)"
                                                   if args.format == "sharegpt" else ""))
    return 0
