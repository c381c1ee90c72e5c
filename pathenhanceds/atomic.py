"""Writing folders atomically: build in a temp dir beside the target, then swap it into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(tmp: Path, output: Path) -> None:
    """Move the finished `tmp` to `output`; an old `output` is removed only after the rename succeeds."""
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
        tmp.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(output)
