"""Evaluation: the paper's tasks, PathVQA modes, PathMMU, bootstrap CIs, reports and comparisons.

Heavy pieces (torch, transformers) are imported only by the runner, generation and callback modules.
"""

from __future__ import annotations

from .parsers import Parsed, parse_choice, parse_crc, parse_grade, parse_yes_no
from .scoring import read_predictions, score_items
from .tasks import TASKS, Task, get_task, register_task

__all__ = [
    "TASKS", "Parsed", "Task", "get_task", "parse_choice", "parse_crc", "parse_grade", "parse_yes_no",
    "read_predictions", "register_task", "score_items",
]
