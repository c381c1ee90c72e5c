"""`pathinsight` command line: a thin dispatcher over the library API.

Each command group lives in its own module exposing `register(subparsers)`; the module sets
`func` on its parsers. Input errors exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# group name -> module with `register(subparsers)`; imported lazily so `pathinsight data ...`
# does not pay for importing torch/transformers.
GROUPS: dict[str, str] = {
    "data": "pathenhanceds.cli",
    "demo": "pathinsight_models.demo",
    "train": "pathinsight_models.training.cli",
    "models": "pathinsight_models.training.models_cli",
    "eval": "pathinsight_models.evaluation.cli",
    "push": "pathinsight_models.publish.cli",
    "submit": "pathinsight_models.leaderboard.submit_cli",
    "leaderboard": "pathinsight_models.leaderboard.cli",
    "chat": "pathinsight_models.chat",
}


def build_parser(groups: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pathinsight", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name in groups or GROUPS:
        importlib.import_module(GROUPS[name]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pathenhanceds.errors import InputError

    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the group that is asked for (help lists all of them).
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([first] if first in GROUPS else None)
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
