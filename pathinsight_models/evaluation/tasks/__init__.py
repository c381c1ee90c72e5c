"""Evaluation tasks: the `Task` type, the `TASKS` registry and the row -> item helpers.

One module per task in this package (`crc`, `pcam`, `captioning`, `pathvqa`, `pathmmu`,
`conversation`, for imported data `classification`, `vqa`, for knowledge datasets `explanation`): its prompt/row selection, answer parser (from `evaluation.parsers`), scorer and
`register_task(Task(...))`. Adding a task = adding a module here and importing it at the bottom.

An *item* is one prompt/answer pair: a dict with ``id``, ``reference`` and, once generated,
``prediction``; plus ``prompt`` (text), ``messages`` (chat prompt for generation), ``image`` (PIL
image or a zero-argument loader), ``group`` (image key, the bootstrap cluster) and task fields
(``label``, ``answer_type``, ``options``, ``subset``). The same scoring serves the runner and
``pathinsight eval score`` on predictions from any model or service.

The default task list (`default_tasks()`: what `pathinsight eval`, the leaderboard worker and the
demo run when no tasks are named) is the tasks registered with ``default=True``, in ``order``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.registry import Registry
from pathenhanceds.schema import message_text

from ..bootstrap import Stat

Item = dict[str, Any]


@dataclass
class TaskScore:
    """What scoring a task yields; `scoring.score_items` adds CIs and turns it into results.json."""

    metrics: dict[str, dict[str, float]]  # mode -> metric -> value
    stats: dict[str, dict[str, Stat]]  # mode -> metric -> bootstrap statistic
    records: list[dict[str, Any]]  # per item: parsed, correct, scores (, reason)
    parse_failures: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


# --- rows -> items -----------------------------------------------------------------------------


def _group(row: dict[str, Any]) -> str:
    shas = row.get("image_sha256") or []
    return shas[0] if shas else row["id"]


def single_turn_items(row: dict[str, Any]) -> list[Item]:
    """The first assistant turn is the reference; the turns before it are the prompt."""
    messages = row["messages"]
    k = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if k is None:
        raise InputError("row has no assistant turn", record=row.get("id"), fix="rebuild the dataset")
    user = [m for m in messages[:k] if m["role"] == "user"]
    return [{
        "id": row["id"], "messages": list(messages[:k]), "prompt": message_text(user[-1]) if user else "",
        "reference": message_text(messages[k]), "label": row.get("label"), "answer_type": row.get("answer_type"),
        "group": _group(row),
    }]


def conversation_items(row: dict[str, Any]) -> list[Item]:
    """One item per assistant turn, with the reference turns before it as history (teacher forcing)."""
    messages = row["messages"]
    items = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant" or k == 0:
            continue
        user = [m for m in messages[:k] if m["role"] == "user"]
        items.append({
            "id": f"{row['id']}@{k}", "messages": list(messages[:k]),
            "prompt": message_text(user[-1]) if user else "", "reference": message_text(message),
            "group": _group(row), "turn": k,
        })
    return items


# --- the task type and registry ----------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """Which PathEnhanceDS rows a task reads (config, `source` and `task` columns) and how a row becomes items."""

    config: str
    task: str
    sources: tuple[str, ...] | None = None  # row `source` values (None: any)
    to_items: Callable[[dict[str, Any]], list[Item]] = single_turn_items
    # Also read rows whose `source` is none of PathEnhanceDS's own sources (`pathinsight data import`).
    foreign: bool = False

    def reads(self, source: str) -> bool:
        """Whether a row with this `source` value belongs to the task."""
        if self.sources is None or source in self.sources:
            return True
        return self.foreign and source not in own_sources()

    def describe_sources(self) -> str:
        """The sources read, for listings: names, "any", and/or "imported data"."""
        if self.sources is None:
            return "any"
        return ", ".join([*self.sources, *(["imported data (any other source)"] if self.foreign else [])])


def own_sources() -> frozenset[str]:
    """The `source` values PathEnhanceDS builds write (its raw-source readers' names)."""
    from pathenhanceds.sources import list_sources

    return frozenset(list_sources())


@dataclass(frozen=True)
class Task:
    """One evaluation task: what it reads, how it decodes, how it scores and reports.

    `rows` is None for a task that reads its own files (PathMMU). `headline` lists the (mode, metric,
    column label) shown in compare tables, model cards and the leaderboard; `fields` are the extra
    per-item fields a predictions file may carry; `default` puts the task in `default_tasks()`;
    `order` is its place in listings and default runs.
    """

    name: str
    description: str
    scorer: Callable[[list[Item], Sequence[str]], TaskScore]
    modes: tuple[str, ...]
    headline: tuple[tuple[str, str, str], ...]
    max_new_tokens: int
    rows: Rows | None = None
    metric_modules: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    parsing: str = ""  # one line on how answers are parsed, for reports
    default: bool = False
    order: int = 100
    # For a task with `rows=None` that reads a dataset folder itself (`explanation`: two configs and the
    # tables of a knowledge dataset): `(data, *, split, limit, seed, revision) -> (items, data description)`.
    read_items: Callable[..., tuple[list[Item], dict[str, Any]]] | None = None

    @property
    def config(self) -> str | None:
        """PathEnhanceDS config holding the rows (None: the task reads its own data)."""
        return self.rows.config if self.rows else None

    @property
    def sources(self) -> tuple[str, ...] | None:
        """Row `source` values the task reads (None: any)."""
        return self.rows.sources if self.rows else None

    @property
    def row_task(self) -> str | None:
        """Row `task` value the task reads."""
        return self.rows.task if self.rows else None

    @property
    def to_items(self) -> Callable[[dict[str, Any]], list[Item]] | None:
        """Row -> items function (None for a task that reads its own data)."""
        return self.rows.to_items if self.rows else None

    def score(self, items: list[Item], modes: Sequence[str] | None = None) -> TaskScore:
        """Score generated `items` in `modes` (default: all of the task's modes)."""
        modes = tuple(modes or self.modes)
        unknown = [m for m in modes if m not in self.modes]
        if unknown:
            raise InputError(f"task {self.name} has no mode {unknown[0]!r}",
                             fix=f"choose from: {', '.join(self.modes)}")
        return self.scorer(items, modes)


TASKS: Registry[Task] = Registry("evaluation task", fix="choose from: {names}")


def register_task(task: Task) -> Task:
    """Add `task` to `TASKS`; a different task under a taken name is refused (`ValueError`)."""
    return TASKS.register(task.name, task)


def get_task(name: str) -> Task:
    """The task registered as `name`; an `InputError` naming the closest task otherwise."""
    return TASKS.get(name)


def list_tasks() -> list[str]:
    """Every registered task name, in listing order."""
    return [t.name for t in sorted(TASKS.values(), key=lambda t: (t.order, t.name))]


def default_tasks() -> list[str]:
    """The tasks run when none are named (`pathinsight eval`, the leaderboard, the demo)."""
    return [name for name in list_tasks() if TASKS.get(name).default]


# Task modules register themselves on import; the order here does not matter (see `Task.order`).
from . import (  # noqa: E402, F401
    captioning,
    classification,
    conversation,
    crc,
    explanation,
    pathmmu,
    pathvqa,
    pcam,
    vqa,
)

__all__ = [
    "TASKS", "Item", "Rows", "Task", "TaskScore", "conversation_items", "default_tasks", "get_task", "list_tasks",
    "register_task", "single_turn_items",
]
