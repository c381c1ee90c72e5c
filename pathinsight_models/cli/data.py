"""`pathinsight data ...`: sample, build, stats, score, export, import."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

from .argtypes import fraction, int_at_least, int_between, selection_option, source_arg

_source_arg = source_arg  # NAME=PATH, both non-empty


DEFAULT_BUILD_OUTPUT = "pathenhanceds"


def refuse_package_folder(output: Path) -> None:
    """`InputError` if `output` is a Python package folder, e.g. ./pathenhanceds inside this repository."""
    target = Path(output).expanduser().resolve()
    if (target / "__init__.py").is_file():
        default = target == (Path.cwd() / DEFAULT_BUILD_OUTPUT).resolve()
        raise InputError(
            f"refusing to write the dataset into {target}: it is a Python package "
            f"({'the current directory is the PathInsight repository' if default else 'it holds __init__.py'})",
            file=output,
            fix="run `pathinsight data build` from another directory, or pass --output PATH (e.g. --output "
            "../pathenhanceds)",
        )


def default_num_proc() -> int:
    """Worker processes by default: the cores this process may use, at most 8."""
    import os

    return max(1, min(len(os.sched_getaffinity(0)), 8))


def register(subparsers: Any) -> None:
    """Add the `data` group and its subcommands."""
    from pathenhanceds.executors import list_executors
    from pathenhanceds.selection import OPTIONS, list_selections

    data = subparsers.add_parser("data", help="build and inspect PathEnhanceDS")
    sub = data.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sample = sub.add_parser("sample", help="write a small synthetic raw-source tree (native formats)")
    sample.add_argument("--output", required=True, type=Path)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--overwrite", action="store_true")
    sample.add_argument("--sources", default="all", metavar="SET",
                        help="which sources: all (default), a selection's (default, paper, xl) or NAME,NAME,...")
    sample.set_defaults(func=cmd_sample)

    build = sub.add_parser("build", help="build PathEnhanceDS from downloaded raw sources")
    build.add_argument("--source", action="append", type=_source_arg, default=[], metavar="NAME=PATH",
                       help="a raw source and where it was downloaded (repeat)")
    build.add_argument("--sources-dir", type=Path, help="a folder with one subfolder per source name")
    build.add_argument("--recipe", default="default", choices=list_selections())
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--output", type=Path, default=Path(DEFAULT_BUILD_OUTPUT),
                       help=f"the dataset folder to write (default ./{DEFAULT_BUILD_OUTPUT}, so that "
                       f"`load_dataset(\"{DEFAULT_BUILD_OUTPUT}\", \"captioning\")` works from this directory)")
    build.add_argument("--num-proc", type=int_at_least(1), default=default_num_proc(),
                       help="worker processes for image encoding (default: available cores, at most 8)")
    build.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    build.add_argument("--no-follow-symlinks", action="store_true",
                       help="refuse symlinks inside the source folders (default: follow them; docs/input_safety.md)")
    build.add_argument("--executor", choices=list_executors(), default="local",
                       help="who cuts and encodes rows: local processes (default) or Ray tasks, one per slide")
    build.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="with --executor ray: join this Ray cluster ('auto': the one `ray start --head` runs "
                            "here); default: a local Ray with --num-proc CPUs")
    build.add_argument("--overwrite", action="store_true")
    build.add_argument("--scores", type=Path, help="image scores from `pathinsight data score` (paper filters)")
    build.add_argument("--dedup-against", type=Path, action="append", default=[], metavar="PATH",
                       help="benchmark images (folder or parquet) no train row may duplicate (repeat)")
    build.add_argument("--near-dup-threshold", type=int_between(0, 64), default=None, metavar="BITS",
                       help="also drop near duplicates within this phash distance (0-64; default: exact only)")
    for opt in OPTIONS.values():
        build.add_argument(f"--{opt.name.replace('_', '-')}", dest=f"opt_{opt.name}", type=selection_option(opt),
                           default=None, help=f"{opt.help} (default {opt.default})")
    build.set_defaults(func=cmd_build)

    stats = sub.add_parser("stats", help="print the counts table of a built dataset")
    stats.add_argument("path", type=Path)
    stats.set_defaults(func=cmd_stats)
    _add_score(sub)
    _add_export(sub)
    _add_import(sub)


def cmd_sample(args: argparse.Namespace) -> int:
    """`pathinsight data sample`: write the synthetic raw-source tree."""
    from pathenhanceds.atomic import check_output
    from pathenhanceds.sample import write_sample
    from pathenhanceds.selection import list_selections

    # --overwrite writes over an earlier sample only, never over real downloads (or cwd, home, /).
    check_output(args.output, overwrite=args.overwrite, kind="sample")
    which = args.sources if args.sources == "all" or "," not in args.sources and args.sources in list_selections() \
        else [n.strip() for n in args.sources.split(",") if n.strip()]
    paths = write_sample(args.output, seed=args.seed, overwrite=args.overwrite, sources=which)
    print(f"wrote synthetic sources to {args.output}: {', '.join(paths)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """`pathinsight data build`: build PathEnhanceDS and print its counts table."""
    from pathenhanceds.atomic import check_output
    from pathenhanceds.build import build
    from pathenhanceds.pipeline import check_source_paths, discover_sources, ignored_source_folders
    from pathenhanceds.stats import format_counts

    sources: dict[str, Any] = dict(discover_sources(args.sources_dir, args.recipe)) if args.sources_dir else {}
    if args.sources_dir:
        for name in ignored_source_folders(args.sources_dir, args.recipe):
            print(f"note: {args.sources_dir / name} is not read by --recipe {args.recipe} "
                  f"(--recipe xl reads every source)", file=sys.stderr)
    for name, path in args.source:
        if name in sources and args.sources_dir is None:
            raise InputError(f"source {name!r} given twice", fix="pass each --source once")
        sources[name] = path
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    check_source_paths(sources)  # an unknown source name is reported before anything about the output
    refuse_package_folder(args.output)  # the default ./pathenhanceds, run inside this repository
    # Before any slow work: never the sources (or the folder holding them), cwd, home; --overwrite only a build.
    check_output(args.output, overwrite=args.overwrite, kind="dataset", protected=[*sources.values(), args.sources_dir])
    from pathenhanceds import limits

    with limits.using(follow_symlinks=not args.no_follow_symlinks):  # the readers' symlink policy, this build only
        result = build(sources, args.output, recipe=args.recipe, seed=args.seed, options=options,
                       num_proc=args.num_proc, on_error=args.on_error, overwrite=args.overwrite,
                       scores=args.scores, dedup_against=args.dedup_against,
                       near_dup_threshold=args.near_dup_threshold, executor=args.executor,
                       ray_address=args.ray_address)
    print(format_counts(result.counts))
    print(f"\nwrote {result.output} (digest {result.digest[:16]}…)")
    for warning in result.manifest["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
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
    score.add_argument("--batch-size", type=int_at_least(1), default=32)
    score.add_argument("--threshold", type=fraction(), default=HE_THRESHOLD,
                       help=f"P(H&E) threshold recorded in the file and used for the summary (default {HE_THRESHOLD})")
    score.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    score.add_argument("--no-similarity", action="store_true", help="skip image-caption similarity")
    score.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    score.add_argument("--overwrite", action="store_true")
    score.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    """`pathinsight data score`: BiomedCLIP scores of source images → a scores parquet file."""
    from pathenhanceds.atomic import check_output
    from pathenhanceds.filters.scorers import HEScorer, SimilarityScorer, load_open_clip, score_sources
    from pathenhanceds.filters.scores_file import write_scores
    from pathenhanceds.pipeline import discover_sources, open_sources
    from pathenhanceds.sources import BuildContext

    paths: dict[str, Any] = dict(discover_sources(args.sources_dir)) if args.sources_dir else {}
    for name, path in args.source:
        if name in paths and args.sources_dir is None:
            raise InputError(f"source {name!r} given twice", fix="pass each --source once")
        paths[name] = path
    # Before scoring: an existing --output must be an earlier scores file (and --overwrite given).
    check_output(args.output, overwrite=args.overwrite, kind="scores",
                 protected=[*paths.values(), args.sources_dir, args.model if Path(args.model).is_dir() else None])
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
    from pathenhanceds.formats import FORMATS
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
    from pathenhanceds.formats import export_dataset

    result = export_dataset(args.dataset, args.format, args.output, config=args.config, split=args.split,
                            overwrite=args.overwrite)
    print(f"wrote {result.rows} row(s) and {result.images} image(s) to {result.output}")
    print(f"data file: {result.data_file.name}" + (" (+ dataset_info.json for LLaMA-Factory)"
                                                   if args.format == "sharegpt" else ""))
    return 0


def _add_import(sub: Any) -> None:
    from pathenhanceds.importing import IMPORT_FORMATS
    from pathenhanceds.schema import TASKS

    imp = sub.add_parser(
        "import", help="turn your own images + labels/captions/conversations into a dataset in our layout",
        description="Formats: " + "; ".join(f"{f.name}: {f.description}" for f in IMPORT_FORMATS.values())
        + ". See docs/import.md.",
    )
    imp.add_argument("--format", required=True, choices=sorted(IMPORT_FORMATS))
    imp.add_argument("--input", required=True, type=Path,
                     help="the class-folder tree (imagefolder) or the JSON/CSV file (llava, sharegpt, csv)")
    imp.add_argument("--output", required=True, type=Path, help="the dataset folder to write")
    imp.add_argument("--task", choices=list(TASKS),
                     help="row task (default: classification for imagefolder and CSV labels, captioning for CSV "
                          "captions, vqa for CSV question+answer, conversation for llava/sharegpt)")
    imp.add_argument("--question", action="append", default=None, metavar="TEXT",
                     help="a classification/captioning question (repeat for a pool; {options} = every class); "
                          "default: the built-in pool, which never reveals the label")
    imp.add_argument("--splits", default="0.8,0.1,0.1",
                     help="train,validation,test fractions for seeded stratified splits (default 0.8,0.1,0.1); "
                          "ignored when the input has split folders or a split field/column")
    imp.add_argument("--seed", type=int, default=0, help="seed of the splits and the question choice (default 0)")
    imp.add_argument("--license", default="other", help="licence id written into every row and the card "
                                                        "(e.g. cc-by-4.0; default other)")
    imp.add_argument("--name", default="imported",
                     help="the rows' `source` value and id prefix (default imported)")
    imp.add_argument("--image-folder", type=Path,
                     help="folder the image paths of a JSON/CSV input are relative to (default: the file's folder)")
    for col in ("image", "label", "caption", "question", "answer", "split", "id"):
        imp.add_argument(f"--{col}-column", dest=f"{col}_column", metavar="NAME",
                         help=f"CSV column holding the {col} (default: auto-detected)")
    imp.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                     help="skip bad records (listed in manifest.json and the card) instead of stopping")
    imp.add_argument("--no-follow-symlinks", action="store_true", help="refuse symlinks inside the input")
    imp.add_argument("--overwrite", action="store_true", help="replace an earlier `pathinsight data import` output")
    imp.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    """`pathinsight data import`: your own images + labels/captions/conversations → a dataset in our layout."""
    from pathenhanceds import limits
    from pathenhanceds.importing import import_dataset
    from pathenhanceds.stats import format_counts

    with limits.using(follow_symlinks=not args.no_follow_symlinks):
        result = import_dataset(
            args.input, args.output, format=args.format, task=args.task, questions=args.question,
            splits=args.splits, seed=args.seed, license=args.license, on_error=args.on_error,
            overwrite=args.overwrite, name=args.name, image_root=args.image_folder,
            image_column=args.image_column, label_column=args.label_column, caption_column=args.caption_column,
            question_column=args.question_column, answer_column=args.answer_column,
            split_column=args.split_column, id_column=args.id_column, limits=limits.current(),
        )
    print(format_counts(result.counts))
    if result.manifest["labels"]:
        print(f"\nclasses: {', '.join(result.manifest['labels'])}")
    print(f"splits: {result.manifest['splits']['rule']}")
    print(f"\nwrote {result.output} (digest {result.digest[:16]}…)")
    for warning in result.manifest["warnings"]:
        print(f"warning: {warning}")
    if result.manifest["skipped"]:
        print(f"skipped {len(result.manifest['skipped'])} bad record(s); see manifest.json and README.md")
    return 0
