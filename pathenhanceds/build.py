"""`build(...)`: raw sources → recipe plans → rows → parquet + card + manifest, atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import __version__
from .errors import InputError
from .export.card import render_card
from .export.licenses import dataset_license, is_non_commercial
from .export.manifest import describe_inputs, relative_to_source, write_manifest
from .export.parquet import write_split
from .recipes import RECIPE_DESCRIPTIONS, RECIPES, PlanInput, RowPlan, get_planner, resolve_options
from .rows import iter_rows
from .sample import is_synthetic
from .schema import SPLITS, TASKS
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
    sources: Mapping[str, Source], recipe: str, seed: int, options: dict[str, Any], ctx: BuildContext
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
        plans += planner(PlanInput(source, records, options, seed, ctx, tuple(sources)))
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
) -> BuildResult:
    """Build PathEnhanceDS into `output` (README.md, data/<config>/<split>-*.parquet, manifest.json).

    Writes into a temporary folder beside `output` and renames it at the end, so a failed build
    leaves nothing behind.
    """
    if on_error not in ("fail", "skip"):
        raise InputError(f"on_error must be 'fail' or 'skip', not {on_error!r}", fix="use --on-error fail|skip")
    output = Path(output).expanduser().resolve()
    if output.exists() and not overwrite:
        raise InputError("output folder already exists", file=output, fix="pass --overwrite or choose another --output")
    resolved = resolve_options(options)
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}", fix=f"use one of: {', '.join(sorted(RECIPES))}")
    opened = open_sources(sources)
    if synthetic is None:
        synthetic = any(is_synthetic(s.path) for s in opened.values())
    ctx = BuildContext(on_error=on_error)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        plans = plan_rows(opened, recipe, seed, resolved, ctx)
        groups: dict[tuple[str, str], list[RowPlan]] = defaultdict(list)
        for plan in plans:
            groups[(plan.task, plan.split)].append(plan)
        digest = hashlib.sha256()
        counts: dict[str, dict[str, dict[str, int]]] = {}
        shas: dict[str, dict[str, list[str]]] = defaultdict(dict)
        files: list[str] = []
        progress = tqdm(total=len(plans), desc="building PathEnhanceDS", unit="row")
        for task in TASKS:
            for split in SPLITS:
                group = groups.get((task, split))
                if not group:
                    continue
                rows = iter_rows(group, opened, ctx, num_proc=num_proc)
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
        if overlap and recipe != "paper":
            first = overlap[0]
            raise InputError(
                f"{len(overlap)} image(s) of validation/test also appear in train "
                f"(e.g. {first['train'][0]} and {first['held_out'][0]}, sha256 {first['sha256'][:16]}…)",
                fix="the raw files contain duplicate images across splits; remove them, or build with "
                "--recipe paper (which records the overlap instead)",
            )
        roots = [s.path for s in opened.values()]
        skipped = [{**s, "file": relative_to_source(s["file"], roots)} for s in ctx.skipped]
        licenses = [s.license for s in opened.values()]
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
            "inputs": {name: {**describe_inputs(src), "stats": getattr(src, "stats", {})} for name, src in opened.items()},
            "skipped": skipped,
            "notes": ctx.notes,
            "warnings": ctx.warnings,
            "split_overlap": overlap,
            "license": dataset_license(licenses),
        }
        write_manifest(tmp / "manifest.json", manifest)
        card = render_card({
            "counts": counts, "recipe": recipe, "recipe_description": RECIPE_DESCRIPTIONS.get(recipe, ""),
            "seed": seed, "options": resolved, "version": __version__, "digest": manifest["digest"],
            "warnings": ctx.warnings, "notes": ctx.notes, "overlap": overlap, "skipped": skipped,
            "license": manifest["license"], "non_commercial": is_non_commercial(licenses),
            "sources": [{"name": n, "license": s.license, "description": s.description} for n, s in opened.items()],
            "synthetic": bool(synthetic), "load_path": output.name,
        })
        (tmp / "README.md").write_text(card)
        _replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for source in opened.values():
            source.close()
    return BuildResult(output, counts, manifest["digest"], manifest)


def _progress(rows, bar):
    for row in rows:
        bar.update(1)
        yield row


def _replace(tmp: Path, output: Path) -> None:
    """Swap the finished build into place; an old output is removed only after the rename succeeds."""
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
        tmp.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(output)
