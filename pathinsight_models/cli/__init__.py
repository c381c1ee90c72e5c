"""`pathinsight` command line: a thin dispatcher over the library API.

One module per command group in this package (`data`, `train`, `eval`, ...), each exposing
`register(subparsers)` and `cmd_*` functions that call the library. `GROUPS` maps a group name to
its module and is imported lazily, so `pathinsight data ...` does not pay for torch/transformers.
Input errors exit with code 2, internal errors with 1 (one line; `--debug` for the traceback),
Ctrl-C / SIGTERM with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from pathenhanceds.registry import Registry

# group name -> module path with `register(subparsers)`
GROUPS: Registry[str] = Registry("command", fix="run `pathinsight --help`; commands: {names}")
for _name in ("data", "demo", "train", "models", "eval", "push", "submit", "leaderboard", "chat"):
    GROUPS.register(_name, f"{__name__}.{_name}")
GROUPS.register("clip", f"{__name__}.clip")  # pathology CLIP track (issue 14)
GROUPS.register("knowledge", f"{__name__}.knowledge")  # knowledge-grounded explanations (issue 16)


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


ISSUES_URL = "https://github.com/pathinsight/pathinsight/issues"
DEBUG_ENV = "PATHINSIGHT_DEBUG"
EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130


def debug_enabled(flag: bool = False) -> bool:
    """`--debug` given, or PATHINSIGHT_DEBUG set to anything but "", "0", "false", "no"."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def run_command(call: Callable[[], Any], *, debug: bool = False) -> int:
    """Run one CLI command under the error contract; returns the exit code. Used by every entry point.

    - bad input (`InputError`) -> `error: ... / file: ... / record: ... / fix: ...` on stderr, exit 2;
    - Ctrl-C or SIGTERM -> temp folders removed by the unwinding writers, workers stopped,
      "interrupted" on stderr, exit 130;
    - anything else is a bug -> one line asking for a report, exit 1; the traceback only with
      `--debug` / PATHINSIGHT_DEBUG=1.
    """
    from pathenhanceds.errors import InputError

    debug = debug_enabled(debug)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        return int(call() or 0)
    except InputError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        _stop_workers()
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `pathinsight ... | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INTERNAL
    except Exception as exc:  # noqa: BLE001 - the contract: no traceback reaches the user unasked
        if debug:
            traceback.print_exc()
        message = " ".join(str(exc).split())[:300] or "no message"
        print(f"error: internal error ({type(exc).__name__}: {message}) — please report this at {ISSUES_URL}"
              + ("" if debug else "; rerun with --debug for the traceback"), file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _stop_workers() -> None:
    rows = sys.modules.get("pathenhanceds.rows")
    if rows is not None and hasattr(rows, "terminate_workers"):
        with contextlib.suppress(Exception):
            rows.terminate_workers()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pathinsight` console script; returns the exit code.

    Exit codes: 0 success, 1 internal error (a bug: please report), 2 bad input or usage, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the group that is asked for (help lists all of them).
    first = next((a for a in argv if not a.startswith("-")), None)
    debug = "--debug" in (argv[: argv.index(first)] if first is not None else argv)

    def dispatch() -> int:
        parser = build_parser([first] if first in GROUPS else None)
        parser.add_argument("--debug", action="store_true",
                            help=f"show tracebacks of internal errors (also: {DEBUG_ENV}=1)")
        args = parser.parse_args(argv)  # usage errors: argparse's message and SystemExit(2)
        return args.func(args)

    return run_command(dispatch, debug=debug)


if __name__ == "__main__":
    raise SystemExit(main())
