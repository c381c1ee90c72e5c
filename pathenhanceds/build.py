"""`build(...)`: raw sources → recipe plans → rows → parquet + card + manifest, atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import __version__
from .atomic import replace_dir
from .dedup import (
    HeldOutIndex,
    ImageItem,
    dedup_summary,
    find_duplicate_groups,
    load_reference_images,
    perceptual_hash,
)
from .errors import InputError
from .export.card import render_card
from .export.licenses import dataset_license, is_non_commercial
from .export.manifest import describe_inputs, relative_to_source, write_manifest
from .export.parquet import write_split
from .filters.scores_file import read_scores
from .recipes import RECIPE_DESCRIPTIONS, RECIPES, PlanInput, RowPlan, get_planner, resolve_options
from .rows import iter_rows
from .sample import is_synthetic
from .schema import TASKS
from .sources import BuildContext, Source, get_source


@dataclass
class BuildResult:
    output: Path
    counts: dict[str, dict[str, dict[str, int]]]
    digest: str
    manifest: dict[str, Any]


def open_sources(sources: Mapping[str, str | os.PathLike[str]]) -> dict[str, Source]:
    if not sources:
        raise InputError("no sources given", fix="pass --source NAME=PATH (or --sources-dir DIR) at least once")
    return {name: get_source(name)(path) for name, path in sorted(sources.items())}


def discover_sources(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Sources laid out as ROOT/<source-name>/ (what `pathinsight data sample` writes)."""
    from .sources import SOURCES

    root = Path(root)
    if not root.is_dir():
        raise InputError("sources folder does not exist", file=root, fix="pass a folder with one subfolder per source")
    found = {name: root / name for name in SOURCES if (root / name).is_dir()}
    if not found:
        raise InputError(f"no source subfolders ({', '.join(sorted(SOURCES))}) found", file=root,
                         fix="name each subfolder after its source, or pass --source NAME=PATH")
    return found


def plan_rows(
    sources: Mapping[str, Source], recipe: str, seed: int, options: dict[str, Any], ctx: BuildContext,
    scores: Any = None,
) -> list[RowPlan]:
    """All row plans of a build, in a stable order, with ids checked for uniqueness."""
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


def split_overlap(shas: dict[str, dict[str, list[str]]]) -> list[dict[str, Any]]:
    """Images (by SHA-256) that appear in train and in validation or test."""
    train = shas.get("train", {})
    overlap = []
    for sha in sorted(train):
        held = [rid for split in ("validation", "test") for rid in shas.get(split, {}).get(sha, [])]
        if held:
            overlap.append({"sha256": sha, "train": sorted(train[sha]), "held_out": sorted(held)})
    return overlap


HELD_OUT_FIRST = ("test", "validation", "train")  # train last: its rows are checked against held-out images


def build(
    sources: Mapping[str, str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    recipe: str = "default",
    seed: int = 0,
    options: dict[str, Any] | None = None,
    num_proc: int = 1,
    on_error: str = "fail",
    overwrite: bool = False,
    synthetic: bool | None = None,
    scores: str | os.PathLike[str] | None = None,
    dedup_against: Sequence[str | os.PathLike[str]] = (),
    near_dup_threshold: int | None = None,
) -> BuildResult:
    """Build PathEnhanceDS into `output` (README.md, data/<config>/<split>-*.parquet, manifest.json).

    Held-out splits are written first; a train row whose image duplicates a validation/test image
    of any source (or an image of a `dedup_against` benchmark) is dropped and reported. Writes into
    a temporary folder beside `output` and renames it at the end: a failed build leaves nothing.
    """
    if on_error not in ("fail", "skip"):
        raise InputError(f"on_error must be 'fail' or 'skip', not {on_error!r}", fix="use --on-error fail|skip")
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}", fix=f"use one of: {', '.join(sorted(RECIPES))}")
    output = Path(output).expanduser().resolve()
    if output.exists() and not overwrite:
        raise InputError("output folder already exists", file=output, fix="pass --overwrite or choose another --output")
    resolved = resolve_options(options)
    held_out = HeldOutIndex(near_dup_threshold)  # also validates the threshold
    score_table = read_scores(scores) if scores is not None else None
    references = [item for path in dedup_against for item in load_reference_images(path)]
    opened = open_sources(sources)
    if synthetic is None:
        synthetic = any(is_synthetic(s.path) for s in opened.values())
    ctx = BuildContext(on_error=on_error)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        plans = plan_rows(opened, recipe, seed, resolved, ctx, scores=score_table)
        groups: dict[tuple[str, str], list[RowPlan]] = defaultdict(list)
        for plan in plans:
            groups[(plan.task, plan.split)].append(plan)
        for item in references:
            held_out.add(item)
        digest = hashlib.sha256()
        counts: dict[str, dict[str, dict[str, int]]] = {}
        shas: dict[str, dict[str, list[str]]] = defaultdict(dict)
        items: list[ImageItem] = list(references)
        dropped: dict[str, str] = {}
        files: list[str] = []
        progress = tqdm(total=len(plans), desc="building PathEnhanceDS", unit="row")
        for split in HELD_OUT_FIRST:
            for task in TASKS:
                group = groups.get((task, split))
                if not group:
                    continue
                rows = _dedup(iter_rows(group, opened, ctx, num_proc=num_proc), split, held_out, items, dropped)
                result = write_split(_progress(rows, progress), tmp / "data" / task, split, digest)
                if result.rows:
                    counts.setdefault(task, {})[split] = result.by_source
                for sha, ids in result.image_sha256.items():
                    shas[split].setdefault(sha, []).extend(ids)
                files += [str(f.relative_to(tmp)) for f in result.files]
        progress.close()
        if not counts:
            raise InputError("the build produced no rows", fix="check the --source paths and the recipe's sizes")
        overlap = split_overlap(shas)
        roots = [s.path for s in opened.values()]
        skipped = [{**s, "file": relative_to_source(s["file"], roots)} for s in ctx.skipped]
        licenses = [s.license for s in opened.values()]
        dup_groups = find_duplicate_groups(items, near_dup_threshold)
        dedup = dedup_summary(dup_groups, dropped, items, near_threshold=near_dup_threshold,
                              references=[Path(p).name for p in dedup_against])
        dedup["removed"] = [{"id": row_id, "reason": reason} for row_id, reason in sorted(dropped.items())]
        dedup["groups"] = [{"kind": g.kind, "rows": [f"{m.split}:{m.id}" for m in g.members]} for g in dup_groups]
        manifest = {
            "name": "PathEnhanceDS",
            "library_version": __version__,
            "recipe": recipe,
            "seed": seed,
            "options": resolved,
            "synthetic": bool(synthetic),
            "digest": digest.hexdigest(),
            "counts": counts,
            "files": sorted(files),
            "inputs": {name: {**describe_inputs(src), "stats": getattr(src, "stats", {})}
                       for name, src in opened.items()},
            "scores": None if score_table is None else {
                "file": Path(scores).name, "model": score_table.model_id, "prompts": list(score_table.prompts),
                "threshold": score_table.threshold},
            "skipped": skipped,
            "notes": ctx.notes,
            "warnings": ctx.warnings,
            "split_overlap": overlap,
            "dedup": dedup,
            "license": dataset_license(licenses),
        }
        write_manifest(tmp / "manifest.json", manifest)
        card = render_card({
            "counts": counts, "recipe": recipe, "recipe_description": RECIPE_DESCRIPTIONS.get(recipe, ""),
            "seed": seed, "options": resolved, "version": __version__, "digest": manifest["digest"],
            "warnings": ctx.warnings, "notes": ctx.notes, "overlap": overlap, "skipped": skipped,
            "license": manifest["license"], "non_commercial": is_non_commercial(licenses),
            "sources": [{"name": n, "license": s.license, "description": s.description} for n, s in opened.items()],
            "synthetic": bool(synthetic), "load_path": output.name, "dedup": dedup,
            "scores": manifest["scores"], "file_sizes": {f: (tmp / f).stat().st_size for f in files},
        })
        (tmp / "README.md").write_text(card)
        replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for source in opened.values():
            source.close()
    return BuildResult(output, counts, manifest["digest"], manifest)


def _dedup(rows: Iterator[dict[str, Any]], split: str, held_out: HeldOutIndex, items: list[ImageItem],
           dropped: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Record every row's images; drop train rows that duplicate a held-out image."""
    for row in rows:
        row_items = [
            ImageItem(row["id"] if k == 0 else f"{row['id']}#{k}", split, row["source"], sha, None,
                      perceptual_hash(image["bytes"], where=row["id"]) if held_out.near_threshold is not None
                      else None)
            for k, (sha, image) in enumerate(zip(row["image_sha256"], row["images"], strict=True))
        ]
        items.extend(row_items)
        if split != "train":
            for item in row_items:
                held_out.add(item)
            yield row
            continue
        reason = next((r for r in map(held_out.match, row_items) if r), None)
        if reason is None:
            yield row
        else:
            dropped[row["id"]] = reason


def _progress(rows, bar):
    for row in rows:
        bar.update(1)
        yield row


