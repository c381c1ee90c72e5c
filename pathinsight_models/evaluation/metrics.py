"""Glue to our local `evaluate` metric modules (pathinsight_models/metrics/<name>/<name>.py).

The evaluation code imports the modules' pure functions directly (no Arrow round trip per call);
`load(name)` gives the same module through `evaluate.load(<local path>)`, which works offline.
"""

from __future__ import annotations

from typing import Any

from ..metrics import list_metrics, metric_module, metric_path
from ..metrics.bleu1 import bleu1
from ..metrics.classification import classification
from ..metrics.pathvqa import pathvqa
from ..metrics.rouge import rouge
from ..metrics.token_f1 import token_f1


def load(name: str, **kwargs: Any):
    """`evaluate.load` of one of our modules by name, from its local directory (no network)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


def describe(names: list[str]) -> dict[str, str]:
    """name -> "pathinsight_models/metrics/<name>@<version>", recorded in results.json."""
    return {name: f"pathinsight_models/metrics/{name}@{metric_module(name).VERSION}" for name in names}


__all__ = ["bleu1", "classification", "describe", "list_metrics", "load", "metric_path", "pathvqa",
           "rouge", "token_f1"]
