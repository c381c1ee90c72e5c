"""Local `evaluate` metric modules: `evaluate.load("<this dir>/<name>")` works offline.

Each `<name>/<name>.py` is self-contained (imports only third-party libraries and sibling files of
its folder, written `from .x import ...` so `evaluate.load` copies them along) so the folder can be
pushed unchanged as a Hub metric module. The evaluation package imports the same pure functions.
`METRICS` maps a metric name to its module path (`list_metrics()`, `metric_module()`,
`metric_path()` for `evaluate.load`); a new metric module is one folder plus one line here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from pathenhanceds.registry import Registry

METRICS_DIR = Path(__file__).resolve().parent
# metric name -> importable module path of `<name>/<name>.py`
METRICS: Registry[str] = Registry("metric module", fix="use one of: {names}")
for _name in ("bleu1", "classification", "pathvqa", "rouge", "token_f1"):
    METRICS.register(_name, f"{__name__}.{_name}.{_name}")


def list_metrics() -> list[str]:
    """The metric module names, sorted."""
    return METRICS.names()


def metric_module(name: str) -> ModuleType:
    """The imported module of metric `name` (its pure functions and `VERSION`)."""
    return importlib.import_module(METRICS.get(name))


def metric_path(name: str) -> str:
    """Directory to pass to `evaluate.load` for one of our metric modules."""
    METRICS.get(name)  # unknown names: an InputError naming the closest metric
    return str(METRICS_DIR / name)
