"""`python -m pathinsight_models.evaluation ...`, made for `accelerate launch -m pathinsight_models.evaluation ...`:
the same arguments as `pathinsight eval` (same parser, same exit codes).

    accelerate launch --num_processes 4 -m pathinsight_models.evaluation --model ID --data DIR --output runs/x

Each process generates a shard of whole images; the main process gathers the answers in item order,
scores them and writes one results.json, the one a single-process `pathinsight eval` writes (see
`pathinsight_models.evaluation.distributed`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `pathinsight eval` arguments and run the command under the CLI's error handling."""
    from pathenhanceds.errors import InputError
    from pathinsight_models.cli import build_parser, run_command

    from .distributed import current_processes

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]

    def dispatch() -> int:
        parser = build_parser(["eval"])
        parser.prog = "python -m pathinsight_models.evaluation"
        args = parser.parse_args(["eval", *argv])  # usage errors: argparse's message and SystemExit(2)
        if getattr(args, "eval_command", None) and current_processes().count > 1:
            raise InputError(f"`eval {args.eval_command}` runs in one process",
                             fix=f"run `pathinsight eval {args.eval_command} ...` without accelerate launch")
        return args.func(args)

    code = run_command(dispatch, debug=debug)
    _leave_process_group()
    return code


def _leave_process_group() -> None:
    """Close the gloo/NCCL group the run opened, so the processes exit without a watchdog abort."""
    import contextlib

    torch_dist = sys.modules.get("torch.distributed")
    if torch_dist is not None and torch_dist.is_available() and torch_dist.is_initialized():
        with contextlib.suppress(Exception):
            torch_dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
