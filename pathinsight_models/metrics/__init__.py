"""Local `evaluate` metric modules: `evaluate.load("<this dir>/<name>")` works offline.

Each `<name>/<name>.py` is self-contained (imports only third-party libraries) so the folder can be
pushed unchanged as a Hub metric module. The evaluation package imports the same pure functions.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("bleu1", "rouge", "classification", "pathvqa", "token_f1")


def metric_path(name: str) -> str:
    """Directory to pass to `evaluate.load` for one of our metric modules."""
    if name not in NAMES:
        raise KeyError(f"unknown metric module {name!r}; known: {', '.join(NAMES)}")
    return str(METRICS_DIR / name)
