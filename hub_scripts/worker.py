"""Leaderboard worker: evaluate PENDING requests, forever (a GPU Space) or once (a scheduled job).

    python hub_scripts/worker.py --leaderboard ORG/LB --data ORG/PathEnhanceDS --once
    python hub_scripts/worker.py --leaderboard ORG/LB --data ORG/PathEnhanceDS --interval 600
    python hub_scripts/worker.py --leaderboard ORG/LB --data ORG/PathEnhanceDS --backend vllm   # GPU + pathinsight[vllm]

Each request goes PENDING -> RUNNING -> FINISHED (results in ORG/LB-results) or FAILED (error kept in
the request). The token (write access to both repos) comes from HF_TOKEN or `hf auth login`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from pathinsight_models.evaluation.backends import list_backends
from pathinsight_models.evaluation.tasks import default_tasks
from pathinsight_models.leaderboard.runner import DATA_ENV, run_pending


def main(argv: list[str] | None = None) -> int:
    """Run the leaderboard queue once (`pathinsight leaderboard run-pending` as a Hub job)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaderboard", default=os.environ.get("LEADERBOARD_ID"), help="ORG/LB ($LEADERBOARD_ID)")
    parser.add_argument("--data", default=os.environ.get(DATA_ENV), help=f"benchmark dataset id (${DATA_ENV})")
    parser.add_argument("--tasks", default=",".join(default_tasks()),
                        help="comma-separated evaluation tasks (default %(default)s)")
    parser.add_argument("--limit", type=int, help="at most N rows per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backend", default=os.environ.get("PATHINSIGHT_EVAL_BACKEND", "hf"),
                        choices=list_backends(),
                        help="generation back-end: hf (transformers) or vllm (CUDA GPU, pathinsight[vllm]) "
                             "(default $PATHINSIGHT_EVAL_BACKEND or hf)")
    parser.add_argument("--once", action="store_true", help="process the queue once and exit")
    parser.add_argument("--interval", type=float, default=600, help="seconds between queue checks")
    args = parser.parse_args(argv)
    if not args.leaderboard or not args.data:
        parser.error("--leaderboard and --data are required (or LEADERBOARD_ID / " + DATA_ENV + ")")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tasks = [t for t in args.tasks.split(",") if t]
    while True:
        done = run_pending(args.leaderboard, data=args.data, tasks=tasks, limit=args.limit,
                           batch_size=args.batch_size, progress=False, backend=args.backend)
        logging.info("processed %d request(s): %s", len(done), ", ".join(f"{r.model} {r.status}" for r in done))
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
