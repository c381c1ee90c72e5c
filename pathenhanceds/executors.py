"""Executors: who turns row plans into rows. `local` (this machine, today's path) and `ray` (Ray Core tasks).

    EXECUTORS.get("ray")(address="auto", workdir=Path("out.shards")).rows(plans, sources, ctx)

Both yield the same rows in plan order, so the writer's digest is the same. The `ray` executor runs
one task per *group* of consecutive plans (a source's `group_key`: one whole slide for PathGen, else
chunks of `GROUP_SIZE` records): the task opens the slide once, cuts, encodes and hashes every patch,
and writes its own parquet shard through temp-and-rename; the driver reads the shards back in plan
order. A rerun after a crash reuses every finished shard (shards are named by a hash of their plans).
Encoding is deterministic (`images.png_rgb8`, fixed JPEG settings), and each group also records a
`pixel_digest` over raw pixels + row id + record id (which carries the position) + turns (the caption),
which does not depend on the encoder at all.

Errors per record are collected by the task, not raised: the driver hands them to `ctx.bad_record`,
which raises only with `on_error="fail"`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import InputError, RecordError
from .limits import clean_message
from .registry import Registry
from .rows import assemble_row, iter_rows
from .selection.base import RowPlan
from .sources.base import BuildContext, Source

GROUP_SIZE = 256  # plans per task for sources without a natural group (no slide)
SHARD_VERSION = 1  # bump when the shard layout or the row assembly changes: old shards are then not reused
_BATCH_ROWS = 100  # rows per parquet row group in a task shard (as the final writer)


# ------------------------------------------------------------------------------------------ groups


def group_plans(plans: Iterable[RowPlan], sources: dict[str, Source], group_size: int = GROUP_SIZE
                ) -> list[list[RowPlan]]:
    """Consecutive plans with one `group_key` (a slide) form a group; others go in chunks of `group_size`.

    Groups are runs of consecutive plans, so concatenating them gives back the plans in order.
    """
    groups: list[list[RowPlan]] = []
    current: list[RowPlan] = []
    current_key: Any = object()
    for plan in plans:
        key_of = getattr(sources[plan.source], "group_key", None)
        key = key_of(plan.record) if key_of is not None else None
        full_key = (plan.source, key)
        if current and (full_key != current_key or (key is None and len(current) >= group_size)):
            groups.append(current)
            current = []
        current.append(plan)
        current_key = full_key
    if current:
        groups.append(current)
    return groups


def pixel_record(plan: RowPlan, raw: bytes, shape: tuple[int, ...]) -> bytes:
    """What the pixel digest covers for one row: id, record id (position), turns (caption), raw pixels."""
    head = json.dumps([plan.id, plan.record.record_id, [list(t) for t in plan.turns], list(shape)],
                      ensure_ascii=False).encode()
    return len(head).to_bytes(8, "little") + head + hashlib.sha256(raw).digest()


def _error_dict(err: RecordError) -> dict[str, Any]:
    return {"reason": clean_message(err.reason), "file": err.file, "record": err.record, "fix": err.fix}


def _error_from(entry: dict[str, Any]) -> RecordError:
    return RecordError(entry["reason"], file=entry["file"], record=entry["record"], fix=entry["fix"])


@dataclass
class GroupResult:
    """What one group produced besides its rows."""

    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    pixel_digest: str = ""


def cut_group(plans: list[RowPlan], sources: dict[str, Source], result: GroupResult) -> Iterator[dict[str, Any]]:
    """Rows of one group in plan order (load/cut, encode, hash, assemble); errors go to `result.errors`.

    Sources with `load_pixels`/`encode_pixels` (PathGen) are hashed over raw pixels, others over their
    stored image bytes. Closes the sources at the end: one slide open per group.
    """
    digest = hashlib.sha256()
    try:
        for plan in plans:
            source = sources[plan.source]
            try:
                if hasattr(source, "load_pixels"):
                    pixels = source.load_pixels(plan.record)
                    payload = source.encode_pixels(plan.record, pixels)
                    raw, shape = pixels.tobytes(), tuple(pixels.shape)
                else:
                    payload = source.load_image(plan.record)
                    raw, shape = payload.data, (len(payload.data),)
            except RecordError as err:
                result.errors.append(_error_dict(err))
                continue
            digest.update(pixel_record(plan, raw, shape))
            result.rows += 1
            yield assemble_row(plan, payload, source.license)
    finally:
        for name in {p.source for p in plans}:
            sources[name].close()
    result.pixel_digest = digest.hexdigest()


def combine_digests(digests: Iterable[str]) -> str:
    """The pixel digest of a run: SHA-256 over its groups' digests in plan order."""
    total = hashlib.sha256()
    for d in digests:
        total.update(bytes.fromhex(d))
    return total.hexdigest()


def local_pixel_digest(plans: list[RowPlan], sources: dict[str, Source]) -> str:
    """The pixel digest of `plans` computed in this process (what a `ray` run must reproduce)."""
    digests = []
    for group in group_plans(plans, sources):
        result = GroupResult()
        for _ in cut_group(group, sources, result):
            pass
        digests.append(result.pixel_digest)
    return combine_digests(digests)


# ------------------------------------------------------------------------------------------ shards


def shard_name(plans: list[RowPlan], sources: dict[str, Source]) -> str:
    """A shard file name that changes whenever anything that shapes its rows changes."""
    h = hashlib.sha256(f"v{SHARD_VERSION}".encode())
    for plan in plans:
        h.update(json.dumps([plan.id, plan.source, plan.task, plan.split, [list(t) for t in plan.turns], plan.label,
                             plan.answer_type, plan.record.record_id, list(map(str, plan.record.locator)),
                             sources[plan.source].license], ensure_ascii=False).encode())
    return f"group-{h.hexdigest()[:32]}"


def _summary_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def shard_done(shard: Path) -> GroupResult | None:
    """The summary of a finished shard (both files present), or None."""
    summary = _summary_path(shard)
    if not (shard.is_file() and summary.is_file()):
        return None
    try:
        data = json.loads(summary.read_text())
        if data.get("version") != SHARD_VERSION:
            return None
        return GroupResult(int(data["rows"]), list(data["errors"]), str(data["pixel_digest"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_group_shard(plans: list[RowPlan], sources: dict[str, Source], shard: str) -> dict[str, Any]:
    """Cut one group into `shard` (parquet) + its summary (JSON), each through temp-and-rename.

    The parquet is renamed last, so a shard whose two files exist is complete. Returns the summary.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .schema import FEATURES

    path = Path(shard)
    done = shard_done(path)
    if done is not None:  # a retried task whose first attempt finished
        return {"version": SHARD_VERSION, "rows": done.rows, "errors": done.errors, "pixel_digest": done.pixel_digest,
                "resumed": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp = path.with_name(path.name + tag)
    summary_tmp = path.with_name(path.stem + ".json" + tag)
    schema = FEATURES.arrow_schema
    result = GroupResult()
    started = time.perf_counter()
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            batch: list[dict[str, Any]] = []
            for row in cut_group(plans, sources, result):
                batch.append(row)
                if len(batch) >= _BATCH_ROWS:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch.clear()
            if batch or result.rows == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        summary = {"version": SHARD_VERSION, "rows": result.rows, "errors": result.errors,
                   "pixel_digest": result.pixel_digest, "seconds": round(time.perf_counter() - started, 3),
                   "pid": os.getpid()}
        summary_tmp.write_text(json.dumps(summary))
        os.replace(summary_tmp, _summary_path(path))
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, summary_tmp):
            leftover.unlink(missing_ok=True)
    return {**summary, "resumed": False}


def read_shard_rows(shard: Path) -> Iterator[dict[str, Any]]:
    """The rows of a shard, one row group at a time (a slide's patches never all in memory)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(shard) as handle:
        for batch in handle.iter_batches(batch_size=_BATCH_ROWS):
            yield from batch.to_pylist()


# ------------------------------------------------------------------------------------------ executors


@dataclass
class ExecutionReport:
    """What a run did: for the manifest and the benchmarks."""

    executor: str
    groups: int = 0
    rows: int = 0
    errors: int = 0
    resumed: int = 0
    pixel_digest: str | None = None
    group_digests: list[str] = field(default_factory=list)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"executor": self.executor, "groups": self.groups, "rows": self.rows, "errors": self.errors,
                "resumed": self.resumed, "pixel_digest": self.pixel_digest, **self.details}


class Executor(ABC):
    """Turns row plans into schema rows, in plan order; bad records go to `ctx.bad_record`."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.reports: list[ExecutionReport] = []

    @abstractmethod
    def rows(self, plans: list[RowPlan], sources: dict[str, Source], ctx: BuildContext) -> Iterator[dict[str, Any]]:
        """Schema rows of `plans`, in order."""

    def close(self) -> None:
        """Release what the executor started (a local Ray instance)."""
        return None

    def summary(self) -> dict[str, Any]:
        """Totals over every `rows()` call (one per task/split group of a build)."""
        total = ExecutionReport(self.name)
        for r in self.reports:
            total.groups += r.groups
            total.rows += r.rows
            total.errors += r.errors
            total.resumed += r.resumed
            total.seconds += r.seconds
        # Over every group of every call, in order: equals `local_pixel_digest` of all the plans.
        if self.reports and all(r.pixel_digest for r in self.reports):
            total.pixel_digest = combine_digests(d for r in self.reports for d in r.group_digests)
        return {**total.as_dict(), "seconds": round(total.seconds, 3)}

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


EXECUTORS: Registry[type[Executor]] = Registry("executor", fix="use --executor one of: {names}")


def list_executors() -> list[str]:
    """Registered executor names (the values of `--executor`)."""
    return EXECUTORS.names()


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """This machine: `iter_rows`, in `num_proc` forked worker processes (the default path)."""

    name = "local"

    def __init__(self, num_proc: int = 1, **_: Any):
        super().__init__()
        self.num_proc = num_proc

    def rows(self, plans: list[RowPlan], sources: dict[str, Source], ctx: BuildContext) -> Iterator[dict[str, Any]]:
        """Rows of `plans` from local worker processes (`rows.iter_rows`), in plan order."""
        report = ExecutionReport(self.name, groups=1)
        self.reports.append(report)
        started, before = time.perf_counter(), len(ctx.skipped)
        for row in iter_rows(plans, sources, ctx, num_proc=self.num_proc):
            report.rows += 1
            yield row
        report.errors = len(ctx.skipped) - before
        report.seconds = time.perf_counter() - started


def _ray_task(plans: list[RowPlan], sources: dict[str, Source], shard: str) -> dict[str, Any]:
    return write_group_shard(plans, sources, shard)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Ray Core tasks, one per group (one slide): each writes its own shard under `workdir`.

    `address=None` starts a local Ray with `num_cpus` CPUs (`ray.init(num_cpus=..., include_dashboard=False)`);
    `address="auto"` joins the cluster started with `ray start --head` (workers need the same Python
    environment and must see the slides and `workdir` at the same paths: shared or object storage).
    An already initialised Ray (a notebook, a test) is used as it is and left running.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None,
                 workdir: str | os.PathLike[str] | None = None, max_in_flight: int | None = None,
                 max_retries: int = 2, **_: Any):
        super().__init__()
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("the ray executor needs Ray, which is not installed",
                             fix="pip install 'pathinsight[ray]' (or use --executor local)") from None
        if workdir is None:
            raise InputError("the ray executor needs a folder for its shards",
                             fix="pass workdir= (build() puts it beside the output)")
        self.address = address
        self.num_cpus = num_cpus
        self.workdir = Path(workdir)
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self._started = False

    def _init(self) -> Any:
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise InputError(f"cannot reach the Ray cluster at {self.address!r} ({clean_message(exc)})",
                                 fix="start it with `ray start --head` on this machine (see docs/pathgen.md), or "
                                     "drop --ray-address to run Ray locally") from None
            self._started = True
        return ray

    def rows(self, plans: list[RowPlan], sources: dict[str, Source], ctx: BuildContext) -> Iterator[dict[str, Any]]:
        """Rows of `plans`, one Ray task per slide (group), in plan order."""
        ray = self._init()
        report = ExecutionReport(self.name)
        self.reports.append(report)
        started = time.perf_counter()
        groups = group_plans(plans, sources)
        report.groups = len(groups)
        shards = [self.workdir / f"{shard_name(g, sources)}.parquet" for g in groups]
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = self.max_in_flight or max(2, 2 * cpus)
        task = ray.remote(_ray_task).options(num_cpus=1, max_retries=self.max_retries)
        sources_ref = ray.put(sources)
        pending: dict[int, Any] = {}
        submitted = 0

        def submit_until(limit: int) -> None:
            nonlocal submitted
            while submitted < len(groups) and submitted < limit:
                if shard_done(shards[submitted]) is None:
                    pending[submitted] = task.remote(groups[submitted], sources_ref, str(shards[submitted]))
                submitted += 1

        digests = report.group_digests
        try:
            for i in range(len(groups)):
                submit_until(i + window)
                if i in pending:
                    summary = ray.get(pending.pop(i))
                else:
                    done = shard_done(shards[i])
                    if done is None:
                        raise InputError(f"shard {shards[i].name} vanished during the run", file=shards[i],
                                         fix="do not share a --output between runs at the same time")
                    summary = {"rows": done.rows, "errors": done.errors, "pixel_digest": done.pixel_digest,
                               "resumed": True}
                report.resumed += bool(summary.get("resumed"))
                for entry in summary["errors"]:
                    report.errors += 1
                    ctx.bad_record(_error_from(entry))
                digests.append(summary["pixel_digest"])
                for row in read_shard_rows(shards[i]):
                    report.rows += 1
                    yield row
        finally:
            for ref in pending.values():
                ray.cancel(ref)
        report.pixel_digest = combine_digests(digests)
        report.seconds = time.perf_counter() - started

    def close(self) -> None:
        """Disconnect from Ray if this executor called `ray.init` (`ray.shutdown`)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def get_executor(name: str, **kwargs: Any) -> Executor:
    """An executor by name (`local`, `ray`); unknown names are an `InputError` naming the closest one."""
    return EXECUTORS.get(name)(**kwargs)
