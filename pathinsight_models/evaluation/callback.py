"""Generation-based task metrics during training, logged next to the loss.

`TaskMetricsCallback` runs chosen tasks (greedy generation + the same parsers and metrics as
`pathinsight eval`, without bootstrap) on a few validation rows every K steps. At such a step it asks
the Trainer to log, and adds its metrics to that log entry (``state.log_history`` and the `logs`
every later callback sees, e.g. the progress bar). Reporting integrations that run *before* it
(TensorBoard, W&B) get the metrics only if the callback is moved to the front:
``trainer.callback_handler.callbacks.insert(0, callback)``.

Distributed runs: it generates on the main process only (so not under ZeRO-3/FSDP sharding).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from .data import items_from_dataset, load_config
from .generation import generate
from .tasks import Item, get_task


class TaskMetricsCallback(TrainerCallback):
    """Every `every_n_steps` steps, score `tasks` on up to `limit` rows of `dataset`.

    Args:
        tasks: task names (e.g. ["crc", "pcam"]); `pathmmu` is not available here.
        dataset: PathEnhanceDS rows: a `datasets.Dataset` (any config, e.g. the `all` validation
            split), a mapping config -> Dataset, or a build directory / Hub id (read with `split`).
        processor: the model's processor (default: the Trainer's `processing_class`).
        every_n_steps: how often to run (also at the last step).
        limit: rows per task (whole images, seeded, as `pathinsight eval --limit`).
        batch_size, max_new_tokens: generation settings (default: each task's own token budget).
        prefix: metric names are `<prefix><task>/<metric>`, or `<prefix><task>/<mode>/<metric>` for
            tasks with several modes (PathVQA), plus `<prefix><task>/unparsed`.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        dataset: Any,
        processor: Any = None,
        every_n_steps: int = 100,
        limit: int | None = 32,
        *,
        split: str = "validation",
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        seed: int = 0,
        prefix: str = "task_",
        progress: bool = False,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be at least 1")
        self.tasks = [get_task(t) for t in tasks]
        if any(t.to_items is None for t in self.tasks):
            raise ValueError("TaskMetricsCallback runs tasks on PathEnhanceDS rows; pathmmu is not one of them")
        self.dataset, self.processor, self.every = dataset, processor, every_n_steps
        self.limit, self.split, self.batch_size = limit, split, batch_size
        self.max_new_tokens, self.seed, self.prefix, self.progress = max_new_tokens, seed, prefix, progress
        self._items: dict[str, list[Item]] | None = None
        self._pending: dict[str, float] = {}
        self.history: list[dict[str, float]] = []  # every computed set of metrics, with its step

    def _rows_for(self, task) -> Any:
        data = self.dataset
        if isinstance(data, Mapping):
            return data.get(task.config) if task.config in data else data.get("all")
        if isinstance(data, str):
            return load_config(data, task.config or "all", self.split)
        return data

    def items(self) -> dict[str, list[Item]]:
        """The fixed items each task is scored on (built once, on first use)."""
        if self._items is None:
            self._items = {}
            for task in self.tasks:
                rows = self._rows_for(task)
                self._items[task.name] = items_from_dataset(rows, task, self.limit, self.seed) if rows is not None else []
        return self._items

    def compute(self, model: Any, processor: Any) -> dict[str, float]:
        """Generate and score every task now; returns the flat metric dict that gets logged."""
        logs: dict[str, float] = {}
        for task in self.tasks:
            items = [dict(it) for it in self.items()[task.name]]
            if not items:
                continue
            start = time.perf_counter()
            answers = generate(model, processor, items, max_new_tokens=self.max_new_tokens or task.max_new_tokens,
                               batch_size=self.batch_size, progress=self.progress, desc=f"eval {task.name}")
            for item, answer in zip(items, answers, strict=True):
                item["prediction"] = answer
            scored = task.score(items)
            several = len(scored.metrics) > 1
            for mode, metrics in scored.metrics.items():
                for name, value in metrics.items():
                    if value is not None and not (isinstance(value, float) and math.isnan(value)):
                        key = f"{task.name}/{mode}/{name}" if several else f"{task.name}/{name}"
                        logs[self.prefix + key] = float(value)
            logs[f"{self.prefix}{task.name}/unparsed"] = float(scored.parse_failures)
            logs[f"{self.prefix}{task.name}/seconds"] = round(time.perf_counter() - start, 3)
        return logs

    def _due(self, state) -> bool:
        step = state.global_step
        return step > 0 and (step % self.every == 0 or step == state.max_steps)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        """Compute the task metrics when due and ask the Trainer to log this step."""
        if not self._due(state) or not state.is_world_process_zero:
            return control
        processor = self.processor or processing_class
        if processor is None or model is None:
            raise ValueError("TaskMetricsCallback needs the model and a processor (pass processor=...)")
        self._pending = self.compute(model, processor)
        self.history.append({**self._pending, "step": state.global_step})
        control.should_log = True  # so the loss is logged at this step too, next to our metrics
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Add the pending task metrics to this log entry (next to the loss)."""
        if self._pending:
            if logs is not None:
                logs.update(self._pending)
            if state.log_history:
                state.log_history[-1].update(self._pending)
            self._pending = {}
        return control
