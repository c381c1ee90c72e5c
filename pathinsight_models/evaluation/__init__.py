"""Evaluation: the paper's tasks, PathVQA modes, PathMMU, bootstrap CIs, reports and comparisons.

- `tasks/`: the `Task` type and `TASKS` registry, one module per task (prompt/rows, parser, scorer);
- `parsers`: free text -> class / yes-no / grade / option letter; `metrics`: glue to the metric modules;
- `scoring`: metrics + bootstrap CIs + per-item records; `bootstrap`: cluster bootstrap;
- `data`: which dataset rows a task reads; `generation`: batched greedy decoding;
- `backends`: `hf` / `vllm` generation back-ends; `distributed`: shards and gathering under `accelerate launch`
  (`python -m pathinsight_models.evaluation`, the `pathinsight eval` arguments);
- `runner`: `run_evaluation` / `score_file`; `report`: report.md, confusion PNGs, compare tables;
- `callback`: task metrics during training.

Heavy pieces (torch, transformers) are imported only by the runner, generation and callback modules.
"""

from __future__ import annotations

from .parsers import Parsed, parse_choice, parse_crc, parse_grade, parse_yes_no
from .scoring import read_predictions, score_items
from .tasks import TASKS, Task, default_tasks, get_task, list_tasks, register_task

__all__ = [
    "TASKS", "Parsed", "Task", "default_tasks", "get_task", "list_tasks", "parse_choice", "parse_crc", "parse_grade",
    "parse_yes_no", "read_predictions", "register_task", "score_items",
]
