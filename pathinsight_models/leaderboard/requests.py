"""Leaderboard data model: evaluation requests and results records, and where they live on the Hub.

A leaderboard `ORG/LB` (the Space) keeps its state in two dataset repos, as the Open LLM Leaderboard
did: `ORG/LB-requests` holds one JSON per submission (`<model>/request_<sha12>_<precision>.json`, its
`status` moving PENDING -> RUNNING -> FINISHED | FAILED), `ORG/LB-results` one JSON per finished
evaluation (`<model>/results_<sha12>_<precision>_<time>.json`) shaped
`{"config": {model_name, model_sha, base_model, weight_type, ...}, "results": {task: {metric: value}}}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from pathenhanceds.errors import InputError

STATUSES = ("PENDING", "RUNNING", "FINISHED", "FAILED")
PRECISIONS = ("float32", "bfloat16", "float16")
WEIGHT_TYPES = ("Original", "Adapter", "Merged")
ACTIVE = ("PENDING", "RUNNING", "FINISHED")  # a request in these states blocks a duplicate submission
SCHEMA_VERSION = 1


def now_iso() -> str:
    """UTC time with microseconds: requests are served first-come first-served by this stamp."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def requests_repo(leaderboard: str) -> str:
    """The dataset repo holding a leaderboard's requests (`<leaderboard>-requests`)."""
    return f"{leaderboard}-requests"


def results_repo(leaderboard: str) -> str:
    """The dataset repo holding a leaderboard's results (`<leaderboard>-results`)."""
    return f"{leaderboard}-results"


@dataclass
class EvalRequest:
    """One submission of a model revision at one precision."""

    model: str
    revision: str  # commit sha of the model repo, fixed at submission
    precision: str
    weight_type: str  # Original | Adapter | Merged
    base_model: str | None = None
    license: str | None = None
    method: str | None = None  # training method from the card (lora, full, ...)
    status: str = "PENDING"
    submitted_time: str = ""
    started_time: str | None = None
    finished_time: str | None = None
    results_file: str | None = None
    error: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InputError(f"unknown request status {self.status!r}", fix=f"one of {', '.join(STATUSES)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}", fix=f"one of {', '.join(PRECISIONS)}")
        if self.weight_type not in WEIGHT_TYPES:
            raise InputError(f"unknown weight type {self.weight_type!r}", fix=f"one of {', '.join(WEIGHT_TYPES)}")
        if not re.fullmatch(r"[0-9a-f]{7,64}", self.revision or ""):
            raise InputError(f"request revision must be a commit sha, got {self.revision!r}")
        self.submitted_time = self.submitted_time or now_iso()

    @property
    def path(self) -> str:
        """Path of this request's JSON in the requests repo."""
        return f"{self.model}/request_{self.revision[:12]}_{self.precision}.json"

    def to_dict(self) -> dict[str, Any]:
        """The request as a JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> bytes:
        """The request file's bytes (sorted, indented JSON)."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], file: str | None = None) -> EvalRequest:
        """A request from a request file's JSON; an InputError when required keys are missing."""
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("model", "revision", "precision", "weight_type") if k not in data]
        if missing:
            raise InputError(f"request lacks {', '.join(missing)}", file=file)
        return cls(**{k: v for k, v in data.items() if k in known})


def _primary_mode(task: str) -> str | None:
    from pathinsight_models.evaluation import TASKS

    return TASKS[task].modes[0] if task in TASKS else None


def result_key(task: str, mode: str, metric: str) -> str:
    """Metric name in a results record: bare for the task's primary mode, `mode/metric` otherwise."""
    return metric if mode == _primary_mode(task) else f"{mode}/{metric}"


def flatten_metrics(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """`pathinsight eval` results.json -> {task: {metric: value}} (NaN / missing values dropped)."""
    out: dict[str, dict[str, float]] = {}
    for task, result in (results.get("tasks") or {}).items():
        values: dict[str, float] = {}
        for mode, metrics in (result.get("metrics") or {}).items():
            for metric, entry in metrics.items():
                value = entry.get("value") if isinstance(entry, Mapping) else entry
                if isinstance(value, int | float) and value == value:
                    values[result_key(task, mode, metric)] = float(value)
        out[task] = values
    return out


def results_record(request: EvalRequest, results: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The leaderboard's results JSON for one finished request."""
    from pathinsight_models import __version__

    tasks = results.get("tasks") or {}
    commits = {(t.get("data") or {}).get("commit") for t in tasks.values()} - {None}
    config = {
        "model_name": request.model,
        "model_sha": request.revision,
        "base_model": request.base_model,
        "weight_type": request.weight_type,
        "precision": request.precision,
        "method": request.method,
        "license": request.license,
        "dataset": dataset,
        "dataset_sha": commits.pop() if len(commits) == 1 else None,
        "split": results.get("split"),
        "limit": results.get("limit"),
        "seed": results.get("seed"),
        "tasks": list(tasks),
        "n": {name: t.get("n") for name, t in tasks.items()},
        "evaluated_at": results.get("created") or now_iso(),
        "pathinsight_version": __version__,
    }
    return {"config": config, "results": flatten_metrics(results)}


def results_path(request: EvalRequest, evaluated_at: str) -> str:
    """Path of a results record in the results repo: `<model>/results_<sha12>_<precision>_<stamp>.json`."""
    stamp = re.sub(r"[^0-9T]", "", evaluated_at)[:15]  # YYYYMMDDTHHMMSS
    return f"{request.model}/results_{request.revision[:12]}_{request.precision}_{stamp}.json"


def check_results_record(data: Any, file: str | None = None) -> dict[str, Any]:
    """A results record with `config.model_name` and a `results` mapping, or an InputError."""
    if (
        not isinstance(data, Mapping)
        or not isinstance(data.get("config"), Mapping)
        or not isinstance(data.get("results"), Mapping)
        or not data["config"].get("model_name")
    ):
        raise InputError("not a leaderboard results record ({config: {model_name, ...}, results: {...}})", file=file)
    return dict(data)
