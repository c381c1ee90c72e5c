"""`pathinsight` command line: a thin dispatcher over the library API.

One module per command group in this package (`data`, `train`, `eval`, ...), each exposing
`register(subparsers)` and `cmd_*` functions that call the library. `GROUPS` maps a group name to
its module and is imported lazily, so `pathinsight data ...` does not pay for torch/transformers.
Input errors exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pathenhanceds.registry import Registry

# group name -> module path with `register(subparsers)`
GROUPS: Registry[str] = Registry("command", fix="run `pathinsight --help`; commands: {names}")
for _name in ("data", "demo", "train", "models", "eval", "push", "submit", "leaderboard", "chat"):
    GROUPS.register(_name, f"{__name__}.{_name}")


def list_groups() -> list[str]:
    """The command group names `pathinsight --help` lists."""
    return GROUPS.names()


def build_parser(groups: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `pathinsight` parser with the given command groups (all when None)."""
    parser = argparse.ArgumentParser(prog="pathinsight", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name in groups or GROUPS.names():
        importlib.import_module(GROUPS.get(name)).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pathinsight` console script; returns the exit code."""
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
