"""`pathinsight data score`: BiomedCLIP scores for the images of raw sources → scores.parquet."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError


def register_data_commands(sub: Any) -> None:
    from ..cli import _source_arg
    from .scorers import DEFAULT_MODEL
    from .scores_file import HE_THRESHOLD

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
    from ..build import discover_sources, open_sources
    from ..sources import BuildContext
    from .scorers import HEScorer, SimilarityScorer, load_open_clip, score_sources
    from .scores_file import write_scores

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
