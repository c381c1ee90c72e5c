"""`pathinsight data export`: a built split → LLaVA / Qwen-VL / LLaMA-Factory ShareGPT JSON + images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register_data_commands(sub: Any) -> None:
    from ..schema import SPLITS
    from .formats import FORMATS

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
    from .formats import export_dataset

    result = export_dataset(args.dataset, args.format, args.output, config=args.config, split=args.split,
                            overwrite=args.overwrite)
    print(f"wrote {result.rows} row(s) and {result.images} image(s) to {result.output}")
    print(f"data file: {result.data_file.name}" + (" (+ dataset_info.json for LLaMA-Factory)"
                                                   if args.format == "sharegpt" else ""))
    return 0
