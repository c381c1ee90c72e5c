"""Evaluate a leaderboard's PENDING requests with `pathinsight eval` and publish the results.

Each request is claimed (RUNNING) before the evaluation starts, so a status page shows what the
worker is doing; it ends FINISHED with the path of its results file, or FAILED with the error.
One failing model never stops the others.
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.hub import check_repo_id, hub_api, is_hub_id

from .requests import EvalRequest, now_iso, results_path, results_record
from .store import list_requests, write_request, write_results
from .submission import redact

logger = logging.getLogger("pathinsight.leaderboard")
# Where `pathinsight leaderboard run-pending` and the worker job read the benchmark dataset id.
DATA_ENV = "PATHINSIGHT_LEADERBOARD_DATA"


def _check_data(data: str) -> str:
    if not is_hub_id(data):
        raise InputError(
            f"the leaderboard evaluates on a Hub dataset, not {data!r}",
            fix="push the benchmark with `pathinsight push dataset` and pass its id to --data",
        )
    return data


def evaluate_request(
    request: EvalRequest,
    leaderboard: str,
    *,
    data: str,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    n_resamples: int = 1000,
    device: str = "auto",
    api: Any = None,
    progress: bool = True,
    backend: str = "hf",
) -> EvalRequest:
    """Run one request through RUNNING to FINISHED/FAILED; returns its final state (already written).

    `tasks` defaults to `evaluation.tasks.default_tasks()`; `backend` is the generation back-end
    (`hf` or `vllm`, as `pathinsight eval --backend`).
    """
    from pathinsight_models.evaluation.runner import run_evaluation
    from pathinsight_models.evaluation.tasks import default_tasks

    request.status, request.started_time, request.error = "RUNNING", now_iso(), None
    write_request(request, leaderboard, api=api)
    try:
        # The model loads through `loading.load_for_inference`, which pins an adapter repo's revision
        # (the base model comes from its default branch), exactly as `pathinsight eval` would.
        with tempfile.TemporaryDirectory(prefix="pathinsight-lb-") as tmp:
            results = run_evaluation(
                request.model, data=data, tasks=list(default_tasks() if tasks is None else tasks), output=Path(tmp),
                model_revision=request.revision,
                dtype=request.precision, limit=limit, batch_size=batch_size, n_resamples=n_resamples,
                device=device, progress=progress, backend=backend,
            )
        record = results_record(request, results, data)
        path = results_path(request, record["config"]["evaluated_at"])
        write_results(record, path, leaderboard, api=api)
        request.status, request.results_file = "FINISHED", path
    except Exception as exc:  # noqa: BLE001 - any failure of one model is recorded, the queue goes on
        token = getattr(api, "token", None)
        request.status = "FAILED"
        request.error = redact(f"{type(exc).__name__}: {exc}", token)[:2000]
        logger.warning("evaluation of %s failed: %s", request.model, request.error)
        logger.debug("%s", redact(traceback.format_exc(), token))
    request.finished_time = now_iso()
    write_request(request, leaderboard, api=api)
    return request


def run_pending(
    leaderboard: str,
    *,
    data: str,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    max_requests: int | None = None,
    batch_size: int = 8,
    n_resamples: int = 1000,
    device: str = "auto",
    token: str | None = None,
    api: Any = None,
    progress: bool = True,
    backend: str = "hf",
) -> list[EvalRequest]:
    """Evaluate the PENDING requests of `leaderboard` (oldest first, at most `max_requests`).

    `data` is the benchmark dataset's Hub id, `tasks` the `pathinsight eval` tasks (default:
    `evaluation.tasks.default_tasks()`), `limit` at most N rows per task (recorded in the results),
    `backend` the generation back-end (`hf`, `vllm`; an unusable one fails before any request is claimed).
    Returns the requests as they ended.
    """
    from pathinsight_models.evaluation.backends import get_backend
    from pathinsight_models.evaluation.tasks import default_tasks, get_task

    check_repo_id(leaderboard, "leaderboard id")
    _check_data(data)
    get_backend(backend)  # vLLM without vllm or a GPU: an input error, not N FAILED requests
    tasks = list(default_tasks() if tasks is None else tasks)
    for task in tasks:
        if get_task(task).config is None:
            raise InputError(f"task {task} does not read the benchmark dataset", fix="drop it from --tasks")
    api = hub_api(api, token)
    pending = [r for r in list_requests(leaderboard, api=api) if r.status == "PENDING"]
    if max_requests is not None:
        pending = pending[:max_requests]
    done = []
    for request in pending:
        logger.info("evaluating %s@%s (%s)", request.model, request.revision[:12], request.precision)
        done.append(evaluate_request(request, leaderboard, data=data, tasks=tasks, limit=limit, batch_size=batch_size,
                                     n_resamples=n_resamples, device=device, api=api, progress=progress,
                                     backend=backend))
    return done
