"""`pathinsight leaderboard ...`: run the evaluation queue, show the tables, declare the benchmark.

    pathinsight leaderboard run-pending --leaderboard ORG/LB --data ORG/PathEnhanceDS [--tasks crc,pcam] [--limit N]
    pathinsight leaderboard results --leaderboard ORG/LB
    pathinsight leaderboard requests --leaderboard ORG/LB
    pathinsight leaderboard eval-yaml --dataset ORG/PathEnhanceDS
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.leaderboard.runner import DATA_ENV


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(subparsers: Any) -> None:
    """Add the `leaderboard` group."""
    from pathinsight_models.evaluation.backends import list_backends
    from pathinsight_models.evaluation.tasks import default_tasks

    defaults = default_tasks()
    p = subparsers.add_parser("leaderboard", help="evaluate queued submissions and show leaderboard tables",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="leaderboard_command", metavar="COMMAND", required=True)

    run = sub.add_parser("run-pending", help="evaluate PENDING requests and publish their results")
    run.add_argument("--leaderboard", required=True, metavar="ORG/LB")
    run.add_argument("--data", metavar="DATASET_REPO", default=os.environ.get(DATA_ENV),
                     help=f"benchmark dataset on the Hub (default: ${DATA_ENV})")
    run.add_argument("--tasks", type=_csv, default=defaults,
                     help=f"comma-separated evaluation tasks (default {','.join(defaults)})")
    run.add_argument("--limit", type=int, help="at most N rows per task (recorded in the results)")
    run.add_argument("--max-requests", type=int, help="evaluate at most N requests this time")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for CIs")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run.add_argument("--backend", default="hf", choices=list_backends(),
                     help="generation back-end: hf (transformers, default) or vllm (CUDA GPU, pathinsight[vllm])")
    run.set_defaults(func=cmd_run_pending)

    for name, func, text in (("results", cmd_results, "print the leaderboard table"),
                             ("requests", cmd_requests, "print the submission queue")):
        q = sub.add_parser(name, help=text)
        q.add_argument("--leaderboard", required=True, metavar="ORG/LB")
        q.set_defaults(func=func)

    ev = sub.add_parser("eval-yaml", help="commit the benchmark declaration eval.yaml to a dataset repo")
    ev.add_argument("--dataset", required=True, metavar="ORG/NAME", help="the PathEnhanceDS dataset repo")
    ev.add_argument("--revision", metavar="BRANCH")
    ev.set_defaults(func=cmd_eval_yaml)


def cmd_run_pending(args: argparse.Namespace) -> int:
    """`pathinsight leaderboard run-pending`: evaluate queued requests and publish results."""
    from pathinsight_models.leaderboard.runner import run_pending

    if not args.data:
        raise InputError("no benchmark dataset given", fix=f"pass --data ORG/PathEnhanceDS or set ${DATA_ENV}")
    done = run_pending(args.leaderboard, data=args.data, tasks=args.tasks, limit=args.limit,
                       max_requests=args.max_requests, batch_size=args.batch_size, n_resamples=args.bootstrap,
                       device=args.device, backend=args.backend)
    for r in done:
        print(f"{r.status:8} {r.model}@{r.revision[:12]} ({r.precision})" + (f": {r.error}" if r.error else ""))
    print(f"{len(done)} request(s) processed")
    return 1 if any(r.status == "FAILED" for r in done) else 0


def _print(df: Any) -> None:
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(df.to_string(index=False) if not df.empty else "(empty)")


def cmd_results(args: argparse.Namespace) -> int:
    """`pathinsight leaderboard results`: print the leaderboard table."""
    from pathinsight_models.leaderboard.table import results_table

    _print(results_table(args.leaderboard))
    return 0


def cmd_requests(args: argparse.Namespace) -> int:
    """`pathinsight leaderboard requests`: print the submission queue."""
    from pathinsight_models.leaderboard.table import requests_table

    _print(requests_table(args.leaderboard))
    return 0


def cmd_eval_yaml(args: argparse.Namespace) -> int:
    """`pathinsight leaderboard eval-yaml`: commit eval.yaml to the dataset repo."""
    from pathinsight_models.publish.eval_results import add_eval_yaml

    commit = add_eval_yaml(args.dataset, revision=args.revision)
    print(f"eval.yaml committed to dataset {args.dataset}: {commit}")
    return 0
