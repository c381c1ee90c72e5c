"""The one build pipeline behind `build()` and the `PathEnhanceDS` builder: plan → rows → held-out dedup.

    pipe = Pipeline(sources, recipe="default", seed=0, ...)   # checks the arguments, reads nothing
    with pipe:                                                # reads scores and benchmarks, opens readers
        for task, split in pipe.groups():                     # held-out splits first (HELD_OUT_FIRST)
            for row in pipe.rows(task, split): ...            # schema rows, leaking train rows dropped
        pipe.dedup_report()                                    # what the manifest and card record

Held-out rows (validation, test) of every source and task, and `dedup_against` benchmark images, form
one `HeldOutIndex`; a train row whose image duplicates one of them (exactly, or within
`near_dup_threshold` phash bits) is dropped the moment its image is loaded. `rows(task, "train")` first
completes the index (loading the held-out groups not yet consumed), so a consumer that asks for one
config or an unusual split order still gets exactly the rows `build()` writes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .dedup import (
    TRAIN,
    DuplicateGroup,
    HeldOutIndex,
    ImageItem,
    dedup_summary,
    find_duplicate_groups,
    load_reference_images,
    perceptual_hash,
)
from .errors import InputError
from .rows import iter_rows
from .schema import TASKS
from .selection import SELECTIONS, PlanInput, RowPlan, get_planner, resolve_options
from .sources import SOURCES, BuildContext, Source, get_source

HELD_OUT_FIRST = ("test", "validation", "train")  # train last: its rows are checked against held-out images


def check_source_paths(sources: Mapping[str, str | os.PathLike[str]]) -> None:
    """At least one source, each a known name with a non-empty path (no disk access)."""
    if not sources:
        raise InputError("no sources given", fix="pass --source NAME=PATH (or --sources-dir DIR) at least once")
    for name, path in sources.items():
        get_source(name)  # an unknown source name names the closest one
        if path is None or str(path).strip() == "":
            raise InputError(f"source {name!r} has an empty path", fix=f"pass --source {name}=DIR")


def open_sources(sources: Mapping[str, str | os.PathLike[str]]) -> dict[str, Source]:
    """Open a reader per `{name: path}`, in name order; unknown names and missing paths are `InputError`s."""
    check_source_paths(sources)
    return {name: get_source(name)(path) for name, path in sorted(sources.items())}


def discover_sources(root: str | os.PathLike[str], recipe: str | None = None) -> dict[str, Path]:
    """Sources laid out as ROOT/<source-name>/ (what `pathinsight data sample` writes).

    With `recipe`, only the folders of sources that selection reads; `ignored_source_folders` names
    the others (e.g. the instruction sets of a sample tree under `--recipe default`).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("sources folder does not exist", file=root, fix="pass a folder with one subfolder per source")
    found = {name: root / name for name in SOURCES if (root / name).is_dir()}
    if recipe is not None:
        planned = SELECTIONS.get(recipe)
        found = {name: path for name, path in found.items() if name in planned}
    if not found:
        raise InputError(f"no source subfolders ({', '.join(SOURCES.names())}) found", file=root,
                         fix="name each subfolder after its source, or pass --source NAME=PATH")
    return found


def ignored_source_folders(root: str | os.PathLike[str], recipe: str) -> list[str]:
    """Source folders under ROOT that the selection `recipe` does not read."""
    planned = SELECTIONS.get(recipe)
    return [name for name in SOURCES if (Path(root) / name).is_dir() and name not in planned]


def plan_rows(
    sources: Mapping[str, Source], recipe: str, seed: int, options: dict[str, Any], ctx: BuildContext,
    scores: Any = None,
) -> list[RowPlan]:
    """All row plans of a build, in a stable order, with record and row ids checked for uniqueness."""
    plans: list[RowPlan] = []
    for name, source in sources.items():
        planner = get_planner(recipe, name)
        records = list(tqdm(source.records(ctx), desc=f"reading {name}", unit="rec", leave=False))
        ids: set[str] = set()
        for rec in records:
            if rec.record_id in ids:
                raise InputError(f"duplicate record id {rec.record_id!r}", file=source.path, record=rec.record_id,
                                 fix="each record must appear once; remove the duplicate file or entry")
            ids.add(rec.record_id)
        plans += planner(PlanInput(source, records, options, seed, ctx, tuple(sources), scores))
    seen: set[str] = set()
    for plan in plans:
        if plan.id in seen:
            raise InputError(f"duplicate row id {plan.id!r}", record=plan.id, fix="report this as a recipe bug")
        seen.add(plan.id)
    return plans


class Pipeline:
    """Sources → row plans → rows, with train rows that duplicate held-out images removed.

    The constructor validates every argument without touching the disk; `open()` (or `with pipe:`)
    reads the scores file and the `dedup_against` benchmarks and opens the readers; `close()` releases
    them. Rows are produced per `(task, split)` group by `rows()`; reports (`skipped`, `dropped`,
    `dedup_report()`) accumulate on the object.
    """

    def __init__(
        self,
        sources: Mapping[str, str | os.PathLike[str]],
        *,
        recipe: str = "default",
        seed: int = 0,
        options: dict[str, Any] | None = None,
        num_proc: int = 1,
        on_error: str = "fail",
        scores: str | os.PathLike[str] | None = None,
        dedup_against: Sequence[str | os.PathLike[str]] = (),
        near_dup_threshold: int | None = None,
        executor: str = "local",
        ray_address: str | None = None,
        shard_dir: str | os.PathLike[str] | None = None,
    ):
        if on_error not in ("fail", "skip"):
            raise InputError(f"on_error must be 'fail' or 'skip', not {on_error!r}", fix="use --on-error fail|skip")
        if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
            raise InputError(f"num_proc must be an integer >= 1, not {num_proc!r}", fix="use --num-proc 1 or more")
        check_source_paths(sources)
        if isinstance(dedup_against, (str, os.PathLike)):
            dedup_against = [dedup_against]  # one path, not its characters
        for path in dedup_against:
            if str(path).strip() == "":
                raise InputError("a --dedup-against path is empty", fix="pass a benchmark image folder or parquet")
        SELECTIONS.get(recipe)  # an unknown name is an InputError naming the closest one
        self.source_paths: dict[str, str | os.PathLike[str]] = dict(sources)
        self.recipe = recipe
        self.seed = seed
        self.options = resolve_options(options)
        self.num_proc = num_proc
        # Who turns plans into rows (`pathenhanceds.executors`): "local" (iter_rows) or "ray" (one task per slide).
        from .executors import EXECUTORS

        EXECUTORS.get(executor)  # an unknown name is an InputError naming the closest one
        if ray_address and executor != "ray":
            raise InputError("--ray-address needs --executor ray", fix="add --executor ray, or drop --ray-address")
        self.executor_name, self.ray_address, self.shard_dir = executor, ray_address, shard_dir
        self._executor: Any = None
        self.scores_path = scores
        self.dedup_against = list(dedup_against)
        self.held_out = HeldOutIndex(near_dup_threshold)  # also validates the threshold
        self.ctx = BuildContext(on_error=on_error)
        self.sources: dict[str, Source] = {}
        self.score_table: Any = None
        self.references: list[ImageItem] = []
        self.dropped: dict[str, str] = {}  # train row id -> why it was removed
        self._plans: list[RowPlan] | None = None
        self._groups: dict[tuple[str, str], list[RowPlan]] = {}
        self._items: dict[tuple[str, str], list[ImageItem]] = {}  # images of fully consumed groups
        self._prepared = False

    @property
    def near_dup_threshold(self) -> int | None:
        """Phash distance (bits) within which a train image counts as a held-out duplicate; None: exact only."""
        return self.held_out.near_threshold

    # ------------------------------------------------------------------------------------ lifecycle
    def open(self) -> Pipeline:
        """Read `scores` and the `dedup_against` images (once), then open the readers if they are closed."""
        if not self._prepared:
            from .filters.scores_file import read_scores

            self.score_table = read_scores(self.scores_path) if self.scores_path is not None else None
            self.references = [item for path in self.dedup_against for item in load_reference_images(path)]
            for item in self.references:
                self.held_out.add(item)
            self._prepared = True
        if not self.sources:
            self.sources = open_sources(self.source_paths)
        return self

    def close(self) -> None:
        """Close every opened reader (their handles and temporary files); `open()` reopens them."""
        sources, self.sources = self.sources, {}
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        for source in sources.values():
            source.close()

    def __enter__(self) -> Pipeline:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- planning
    @property
    def plans(self) -> list[RowPlan]:
        """Every row plan of the build (computed once, after `open()`)."""
        if self._plans is None:
            if not self.sources:
                raise RuntimeError("Pipeline.open() must be called before planning")
            self._plans = plan_rows(self.sources, self.recipe, self.seed, self.options, self.ctx,
                                    scores=self.score_table)
            groups: dict[tuple[str, str], list[RowPlan]] = defaultdict(list)
            for plan in self._plans:
                groups[(plan.task, plan.split)].append(plan)
            self._groups = dict(groups)
        return self._plans

    def groups(self, tasks: Sequence[str] = TASKS) -> list[tuple[str, str]]:
        """The non-empty `(task, split)` groups among `tasks`, held-out splits first (the write order)."""
        self.plans  # noqa: B018 - plans on first use
        return [(task, split) for split in HELD_OUT_FIRST for task in TASKS
                if task in tasks and self._groups.get((task, split))]

    def planned(self, task: str, split: str) -> int:
        """Number of planned rows of one group (before skips and dedup)."""
        self.plans  # noqa: B018
        return len(self._groups.get((task, split), ()))

    # ------------------------------------------------------------------------------------------ rows
    def rows(self, task: str, split: str) -> Iterator[dict[str, Any]]:
        """Schema rows of one group, as `build()` writes them; train rows leaking a held-out image are dropped."""
        self.plans  # noqa: B018 - plans on first use
        group = self._groups.get((task, split), [])
        if split == TRAIN:
            self.complete_held_out_index()
        items: list[ImageItem] = []
        for row in self._iter_rows(group):
            row_items = self._row_items(row, split)
            items += row_items
            if split == TRAIN:
                reason = next((r for r in map(self.held_out.match, row_items) if r), None)
                if reason is not None:
                    self.dropped[row["id"]] = reason
                    continue
            yield row
        self._finish_group(task, split, items)

    def _iter_rows(self, group: list[RowPlan]) -> Iterator[dict[str, Any]]:
        if self.executor_name == "local":
            return iter_rows(group, self.sources, self.ctx, num_proc=self.num_proc)
        if self._executor is None:
            from .executors import get_executor

            self._executor = get_executor(self.executor_name, num_proc=self.num_proc, num_cpus=self.num_proc,
                                          address=self.ray_address, workdir=self.shard_dir)
        return self._executor.rows(group, self.sources, self.ctx)

    def executor_summary(self) -> dict[str, Any]:
        """What the executor did (groups/tasks, rows, errors, resumed shards, pixel digest); local: its name."""
        return self._executor.summary() if self._executor is not None else {"executor": self.executor_name}

    def complete_held_out_index(self) -> None:
        """Load the held-out groups not consumed yet, so every held-out image is in the index."""
        for task, split in self.groups():
            if split != TRAIN and (task, split) not in self._items:
                for _ in self.rows(task, split):
                    pass

    def _finish_group(self, task: str, split: str, items: list[ImageItem]) -> None:
        if (task, split) in self._items:
            return  # consumed before (e.g. a builder split generated twice): indexed already
        self._items[(task, split)] = items
        if split != TRAIN:
            for item in items:
                self.held_out.add(item)

    def _row_items(self, row: dict[str, Any], split: str) -> list[ImageItem]:
        near = self.held_out.near_threshold is not None
        return [
            ImageItem(row["id"] if k == 0 else f"{row['id']}#{k}", split, row["source"], sha, None,
                      perceptual_hash(image["bytes"], where=row["id"]) if near else None)
            for k, (sha, image) in enumerate(zip(row["image_sha256"], row["images"], strict=True))
        ]

    # --------------------------------------------------------------------------------------- reports
    @property
    def skipped(self) -> list[dict[str, str]]:
        """Records skipped with `on_error="skip"`: file, record, reason."""
        return self.ctx.skipped

    @property
    def items(self) -> list[ImageItem]:
        """Images of the references and of every consumed group, in write order (order-independent)."""
        ordered = [self._items[key] for key in ((t, s) for s in HELD_OUT_FIRST for t in TASKS) if key in self._items]
        return [*self.references, *(item for items in ordered for item in items)]

    def duplicate_groups(self) -> list[DuplicateGroup]:
        """Exact (and, with a threshold, near) duplicate groups among all consumed images."""
        return find_duplicate_groups(self.items, self.held_out.near_threshold)

    def dedup_report(self) -> dict[str, Any]:
        """The manifest's `dedup` section: counts, removed train rows with reasons, duplicate groups."""
        items = self.items
        groups = find_duplicate_groups(items, self.held_out.near_threshold)
        report = dedup_summary(groups, self.dropped, items, near_threshold=self.held_out.near_threshold,
                               references=[Path(p).name for p in self.dedup_against])
        report["removed"] = [{"id": row_id, "reason": reason} for row_id, reason in sorted(self.dropped.items())]
        report["groups"] = [{"kind": g.kind, "rows": [f"{m.split}:{m.id}" for m in g.members]} for g in groups]
        return report


__all__ = ["HELD_OUT_FIRST", "Pipeline", "check_source_paths", "discover_sources", "open_sources", "plan_rows"]
