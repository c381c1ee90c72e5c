"""`pathinsight submit --model ORG/NAME --leaderboard ORG/LB`: queue a Hub model for evaluation."""

from __future__ import annotations

import argparse
from typing import Any

from pathinsight_models.leaderboard.requests import PRECISIONS


def register(subparsers: Any) -> None:
    """Add `pathinsight submit`."""
    p = subparsers.add_parser(
        "submit",
        help="submit a Hub model to a PathEnhanceDS leaderboard (writes a PENDING request)",
        description="Check that the model repo, its card, licence, safetensors weights and (for adapters) the "
        "base model exist on the Hub, then write a request JSON to the ORG/LB-requests dataset repo.",
    )
    p.add_argument("--model", required=True, metavar="ORG/NAME", help="model repo (adapter, merged or full)")
    p.add_argument("--leaderboard", required=True, metavar="ORG/LB", help="leaderboard id (its Space)")
    p.add_argument("--revision", help="branch, tag or sha to evaluate (default main; pinned to its sha)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32", help="evaluation dtype (default float32)")
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    """`pathinsight submit`: queue a Hub model for leaderboard evaluation."""
    from pathinsight_models.leaderboard.submission import submit

    request = submit(args.model, args.leaderboard, revision=args.revision, precision=args.precision)
    print(f"submitted {request.model}@{request.revision[:12]} ({request.weight_type}, {request.precision}) "
          f"to {args.leaderboard}: {request.status}")
    return 0
