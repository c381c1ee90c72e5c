"""Turning `RowPlan`s into schema rows: load pixels (optionally in worker processes), hash, assemble."""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from .atomic import deferred_signals
from .errors import InputError, RecordError
from .images import ImagePayload
from .limits import clean_message
from .schema import make_messages
from .selection.base import RowPlan
from .sources.base import BuildContext, Source

_WINDOW = 2048  # plans in flight at once: bounds memory when workers outpace the writer
_worker_sources: dict[str, Source] = {}
_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()  # live encoding pools, for `terminate_workers()`


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


def _use_sources(sources: dict[str, Source]) -> None:
    global _worker_sources
    _worker_sources = sources


def _init_worker(sources: dict[str, Source]) -> None:
    _use_sources(sources)
    _worker_signals()  # only in worker processes: the parent keeps its Ctrl-C handling


def _worker_signals() -> None:
    """Workers leave Ctrl-C to the parent (which terminates them) and die with it if it is killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # pool.terminate(): die quietly, no traceback
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENT_SIGNALS)  # blocked while forking (`deferred_signals`)
    try:  # Linux: SIGTERM when the parent dies, even by SIGKILL (no orphaned workers)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_PARENT_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def terminate_workers() -> None:
    """Stop every live encoding pool now (the CLI calls this on Ctrl-C / SIGTERM)."""
    for pool in list(_POOLS):
        _shutdown(pool)


_TERMINATE_WAIT = 10.0  # seconds


def _shutdown(pool: Any) -> None:
    """`pool.terminate()` + `join()`, but never a hang.

    CPython's `Pool.terminate()` first takes the task queue's read lock to drain it. An idle worker
    holds that lock while it waits for a task, so a worker killed there (SIGTERM to the whole process
    group) leaves it taken for good and `terminate()` would wait forever. It runs in a helper thread;
    if it has not finished in time, the workers are killed and the (daemon) thread is left behind.
    """
    _POOLS.discard(pool)
    helper = threading.Thread(target=_terminate_and_join, args=(pool,), daemon=True)
    helper.start()
    helper.join(_TERMINATE_WAIT)
    if helper.is_alive():
        workers = list(getattr(pool, "_pool", ()))
        for proc in workers:
            if proc.exitcode is None:
                proc.kill()
        for proc in workers:
            proc.join(_TERMINATE_WAIT)


def _terminate_and_join(pool: Any) -> None:
    pool.terminate()
    pool.join()


def _load(plan: RowPlan) -> ImagePayload | RecordError:
    try:
        return _worker_sources[plan.source].load_image(plan.record)
    except RecordError as err:  # returned, not raised: the parent decides fail vs skip
        return err
    except InputError as err:  # a reader's file-level complaint while loading one record: still one record
        return RecordError(err.reason, file=err.file, record=err.record or plan.id, fix=err.fix)
    except Exception as exc:  # noqa: BLE001  an unreadable file of one record must be skippable, not a traceback
        locator = plan.record.locator
        file = locator[1] if isinstance(locator, tuple) and len(locator) > 1 and locator[0] != "h5" else None
        return RecordError(f"cannot read this record's image ({type(exc).__name__}: {clean_message(exc)})",
                           file=file, record=plan.id,
                           fix="re-download the file or pass --on-error skip; if the file is fine, please report this")


def iter_rows(
    plans: Iterable[RowPlan], sources: dict[str, Source], ctx: BuildContext, num_proc: int = 1
) -> Iterator[dict[str, Any]]:
    """Rows in plan order; bad records raise or are skipped according to `ctx.on_error`."""
    plans = list(plans)
    if num_proc <= 1:
        _use_sources(sources)
        results: Iterable[ImagePayload | RecordError] = map(_load, plans)
        yield from _rows(plans, results, sources, ctx)
        return
    # Readers re-open their files per process (their caches check the pid), so fork is safe.
    # A Ctrl-C while forking is delivered after the pool exists (not swallowed by a fork hook).
    with deferred_signals():
        pool = mp.get_context("fork").Pool(num_proc, initializer=_init_worker, initargs=(sources,))
        _POOLS.add(pool)  # registered before a held-back Ctrl-C is delivered: `terminate_workers` finds it
    try:
        for start in range(0, len(plans), _WINDOW):
            window = plans[start : start + _WINDOW]
            # Large chunks keep each worker on contiguous records (one HDF5 block / row group each).
            yield from _rows(window, pool.imap(_load, window, chunksize=64), sources, ctx)
    finally:  # also on an interrupt or an abandoned generator: never leave workers behind
        _shutdown(pool)


def _rows(plans, results, sources, ctx) -> Iterator[dict[str, Any]]:
    for plan, result in zip(plans, results, strict=True):
        if isinstance(result, RecordError):
            ctx.bad_record(result)
            continue
        yield assemble_row(plan, result, sources[plan.source].license)
