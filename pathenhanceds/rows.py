"""Turning `RowPlan`s into schema rows: load pixels (optionally in worker processes), hash, assemble."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import RecordError
from .images import ImagePayload
from .recipes.base import RowPlan
from .schema import make_messages
from .sources.base import BuildContext, Source

_WINDOW = 2048  # plans in flight at once: bounds memory when workers outpace the writer
_worker_sources: dict[str, Source] = {}


def assemble_row(plan: RowPlan, payload: ImagePayload, license: str) -> dict[str, Any]:
    """A schema row (pure)."""
    return {
        "id": plan.id,
        "source": plan.source,
        "task": plan.task,
        "images": [{"bytes": payload.data, "path": None}],
        "messages": make_messages(list(plan.turns)),
        "label": plan.label,
        "answer_type": plan.answer_type,
        "image_sha256": [payload.sha256],
        "license": license,
    }


def _init_worker(sources: dict[str, Source]) -> None:
    global _worker_sources
    _worker_sources = sources


def _load(plan: RowPlan) -> ImagePayload | RecordError:
    try:
        return _worker_sources[plan.source].load_image(plan.record)
    except RecordError as err:  # returned, not raised: the parent decides fail vs skip
        return err


def iter_rows(
    plans: Iterable[RowPlan], sources: dict[str, Source], ctx: BuildContext, num_proc: int = 1
) -> Iterator[dict[str, Any]]:
    """Rows in plan order; bad records raise or are skipped according to `ctx.on_error`."""
    plans = list(plans)
    if num_proc <= 1:
        _init_worker(sources)
        results: Iterable[ImagePayload | RecordError] = map(_load, plans)
        yield from _rows(plans, results, sources, ctx)
        return
    # Readers re-open their files per process (their caches check the pid), so fork is safe.
    with mp.get_context("fork").Pool(num_proc, initializer=_init_worker, initargs=(sources,)) as pool:
        for start in range(0, len(plans), _WINDOW):
            window = plans[start : start + _WINDOW]
            # Large chunks keep each worker on contiguous records (one HDF5 block / row group each).
            yield from _rows(window, pool.imap(_load, window, chunksize=64), sources, ctx)


def _rows(plans, results, sources, ctx) -> Iterator[dict[str, Any]]:
    for plan, result in zip(plans, results, strict=True):
        if isinstance(result, RecordError):
            ctx.bad_record(result)
            continue
        yield assemble_row(plan, result, sources[plan.source].license)
