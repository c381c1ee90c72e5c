"""`pathinsight push ...`: publish built artefacts to the Hugging Face Hub.

Each subcommand is one entry of `SUBCOMMANDS` (name -> function adding its parser), so `push model`
and friends plug in without touching the others. The token comes from `hf auth login` or `HF_TOKEN`,
never from the command line (it would end up in shell history).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _add_dataset(sub: Any) -> None:
    p = sub.add_parser(
        "dataset",
        help="upload a built PathEnhanceDS folder to a Hub dataset repo (one commit)",
        description="Validate OUT (README.md with configs, data/<config>/<split>-*.parquet, manifest.json) "
        "and upload it to the dataset repo REPO_ID in a single commit.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="the --output folder of `pathinsight data build`")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="target dataset repo")
    p.add_argument("--private", action="store_true", help="create the repo private (or make it private)")
    p.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if missing)")
    p.add_argument("--commit-message", help="defaults to 'Upload PathEnhanceDS (<n> shards, <digest>)'")
    p.set_defaults(func=cmd_push_dataset)


def cmd_push_dataset(args: argparse.Namespace) -> int:
    """`pathinsight push dataset`: upload a built dataset folder in one commit."""
    from pathinsight_models.publish.dataset import push_dataset

    commit = push_dataset(
        args.out,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(f"pushed {args.out} to dataset {args.repo_id}: {commit}")
    return 0


def _add_model(sub: Any) -> None:
    p = sub.add_parser(
        "model",
        help="upload a training run (LoRA adapter, merged or full weights), a CLIP model or an assembled VLM "
        "with its model card",
        description="Publish RUN_DIR (output of `pathinsight train`) to the model repo REPO_ID in one commit: "
        "safetensors weights, processor + chat template, recipe.yaml, README.md (model card with licence, "
        "training recipe, eval table, model-index) and, with --results, .eval_results/pathenhanceds.yaml. "
        "A CLIP/SigLIP folder (`clip train`/`convert`/`tiny`) gets a zero-shot card (model-index from `clip eval` "
        "results); a `models assemble` folder a card listing its vision encoder and language model in base_model.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the output_dir of `pathinsight train`")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="target model repo")
    p.add_argument("--results", type=Path, metavar="RESULTS_JSON", help="results.json of `pathinsight eval`")
    p.add_argument("--merged", action="store_true", help="merge the LoRA adapter into the base weights first")
    p.add_argument("--base-model-id", metavar="ORG/NAME", help="Hub id of the base (when it was a local dir)")
    p.add_argument("--dataset-id", metavar="ORG/NAME", help="Hub id of the training data (when it was a local dir)")
    p.add_argument("--base-license", metavar="ID", help="licence of the base model if its card lacks one")
    p.add_argument("--dataset-license", metavar="ID", help="licence of the dataset if its card lacks one")
    p.add_argument("--results-dataset-id", metavar="ORG/NAME",
                   help="CLIP models: Hub id of the dataset the `clip eval` results were computed on (when local)")
    p.add_argument("--vision-model-id", metavar="ORG/NAME", help="assembled VLMs: Hub id of the vision encoder")
    p.add_argument("--language-model-id", metavar="ORG/NAME", help="assembled VLMs: Hub id of the language model")
    p.add_argument("--vision-license", metavar="ID", help="assembled VLMs: licence of the vision encoder")
    p.add_argument("--language-license", metavar="ID", help="assembled VLMs: licence of the language model")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if missing)")
    p.add_argument("--commit-message")
    p.set_defaults(func=cmd_push_model)


def cmd_push_model(args: argparse.Namespace) -> int:
    """`pathinsight push model`: upload a training run with its model card."""
    from pathinsight_models.publish.model import push_model

    result = push_model(
        args.run_dir,
        args.repo_id,
        results=args.results,
        merged=args.merged,
        base_model_id=args.base_model_id,
        dataset_id=args.dataset_id,
        base_license=args.base_license,
        dataset_license=args.dataset_license,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        results_dataset_id=args.results_dataset_id,
        vision_model_id=args.vision_model_id,
        language_model_id=args.language_model_id,
        vision_license=args.vision_license,
        language_license=args.language_license,
    )
    print(f"pushed {result.weight_type.lower()} model to {args.repo_id} (licence {result.license}): {result.commit}")
    return 0


# subcommand name -> function(subparsers) adding it
SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "dataset": _add_dataset,
    "model": _add_model,
}


def register(subparsers: Any) -> None:
    """Add the `push` group."""
    push = subparsers.add_parser("push", help="publish datasets and models to the Hugging Face Hub")
    sub = push.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
