"""Pure scoring of the `explanation` evaluation task: diagnosis and grounding of free-text answers.

- Diagnosis: the class an answer names (the only class it names; none or several = unparsed), scored
  with the shared classification metric module — balanced accuracy (GFT's metric) and macro-F1.
- Grounding, per answer against its image's knowledge table, then averaged:
  `coverage` = share of the table's top features and top quadrants (`table_vocabulary`) the answer
  names; `precision` = share of the features and quadrants the answer names that the table holds
  (answers naming none are left out of the mean).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .tables import named_terms, table_vocabulary


def parse_diagnosis(answer: str, classes: Sequence[str]) -> str | None:
    """The one class name the answer mentions (longest names first; a class inside another does not count)."""
    low = answer.lower()
    found = []
    for c in sorted(classes, key=len, reverse=True):
        pattern = r"(?<![\w-])" + re.escape(c.lower()) + r"(?![\w-])"
        if re.search(pattern, low):
            found.append(c)
            low = re.sub(pattern, " ", low)
    return found[0] if len(found) == 1 else None


def grounding(answer: str, table: dict[str, Any]) -> dict[str, float]:
    """Coverage and precision of one answer's named features and quadrants against its table."""
    vocab = table_vocabulary(table)
    terms = named_terms(answer)
    top = {("f", f) for f in vocab["top_features"]} | {("q", q) for q in vocab["top_quadrants"]}
    named = {("f", f) for f in terms["features"]} | {("q", q) for q in terms["quadrants"]}
    held = {("f", f) for f in vocab["features"]} | {("q", q) for q in vocab["quadrants"]}
    return {"coverage": len(top & named) / len(top) if top else float("nan"),
            "precision": len(named & held) / len(named) if named else float("nan"),
            "named": float(len(named))}


def score_explanations(answers: Sequence[str], tables: Sequence[dict[str, Any]],
                       classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Diagnosis metrics (balanced accuracy, macro-F1, ...) and mean grounding over answers."""
    from pathinsight_models.metrics.classification.classification import compute

    if len(answers) != len(tables):
        raise ValueError(f"{len(answers)} answers but {len(tables)} tables")
    classes = list(classes or tables[0]["classes"]) if tables else list(classes or [])
    predictions = [parse_diagnosis(a, classes) for a in answers]
    diagnosis = compute(predictions, [t["label"] for t in tables], classes)
    g = [grounding(a, t) for a, t in zip(answers, tables, strict=True)]

    def mean(key: str) -> float:
        values = [x[key] for x in g if not np.isnan(x[key])]
        return float(np.mean(values)) if values else float("nan")

    return {"diagnosis": diagnosis, "balanced_accuracy": diagnosis.get("balanced_accuracy"),
            "macro_f1": diagnosis.get("macro_f1"), "grounding_coverage": mean("coverage"),
            "grounding_precision": mean("precision"),
            "answers_naming_nothing": int(sum(x["named"] == 0 for x in g)), "n": len(answers)}
