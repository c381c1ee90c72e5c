"""`pathinsight knowledge ...`: knowledge-grounded explanation data (cell graphs → GNN → IG → tables → Q&A)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `knowledge` group: build, synthetic."""
    parser = subparsers.add_parser("knowledge", help="knowledge-grounded explanations (GFT): build two-stage Q&A data")
    sub = parser.add_subparsers(dest="knowledge_command", metavar="COMMAND", required=True)

    build = sub.add_parser("build", help="classification dataset → cell graphs, GNN, attributions, tables, Q&A")
    build.add_argument("--data", required=True, type=Path, help="PathEnhanceDS-layout dataset folder")
    build.add_argument("--config", default="classification", help="config to read (rows with images + label)")
    build.add_argument("--output", required=True, type=Path, help="knowledge dataset folder K to write")
    build.add_argument("--source", action="append", default=[], dest="sources", metavar="NAME",
                       help="keep only rows of this source (repeatable; e.g. crc)")
    build.add_argument("--graph", default="cell", help="graph kind (cell: nuclei as nodes)")
    build.add_argument("--teacher", default="template",
                       help="template (offline), hf:MODEL (local transformers LM) or openai:URL#MODEL "
                            "(key from OPENAI_API_KEY)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--pooling", choices=("mean+max", "sum+max"), default="mean+max",
                       help="GNN graph pooling (sum+max is GFT's; see docs/knowledge.md)")
    build.add_argument("--overwrite", action="store_true",
                       help="replace an earlier `pathinsight knowledge build` output in --output (nothing else)")
    build.set_defaults(func=cmd_build)

    synthetic = sub.add_parser("synthetic", help="write a synthetic cell-patch classification dataset (offline)")
    synthetic.add_argument("--output", required=True, type=Path)
    synthetic.add_argument("--per-class", type=int, default=12, help="train patches per class (val/test: 1/3, 1/2)")
    synthetic.add_argument("--mode", choices=("whole", "focus"), default="whole")
    synthetic.add_argument("--size", type=int, default=128, help="patch size in pixels")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--overwrite", action="store_true",
                           help="replace an earlier `pathinsight knowledge synthetic` output in --output (nothing else)")
    synthetic.set_defaults(func=cmd_synthetic)


def cmd_build(args: argparse.Namespace) -> int:
    """`pathinsight knowledge build`: write the knowledge dataset K and print its headline numbers."""
    from pathinsight_models.knowledge.build import build_knowledge

    result = build_knowledge(args.data, args.output, config=args.config, graph=args.graph, teacher=args.teacher,
                             seed=args.seed, sources=args.sources, overwrite=args.overwrite,
                             gnn_options={"pooling": args.pooling})
    gnn, retrieval = result.manifest["gnn"], result.manifest["retrieval"]
    print(f"wrote {result.output}")
    print(f"rows: {result.counts}")
    print(f"GNN {gnn['evaluated_on']} balanced accuracy {gnn['test']['balanced_accuracy']:.3f} "
          f"(logistic regression on graph statistics {gnn['baseline_test']['balanced_accuracy']:.3f})")
    print("nearest-neighbour label hit rate: " + ", ".join(f"{k} {v['hit_rate']:.3f}" for k, v in retrieval.items()))
    print(f"digest {result.digest}")
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    """`pathinsight knowledge synthetic`: seeded synthetic H&E-like patches in the PathEnhanceDS layout."""
    from pathinsight_models.knowledge.synthetic import write_synthetic_dataset

    print(write_synthetic_dataset(args.output, args.per_class, seed=args.seed, size=args.size, mode=args.mode,
                                  overwrite=args.overwrite))
    return 0
