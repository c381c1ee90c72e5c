"""`build(...)`: the `Pipeline`'s rows (plan → rows → held-out dedup) → parquet + card + manifest, atomically.

The folder layout is `layout`'s; the writers are in `write/`; the output is written beside the target and
swapped in by `atomic` (nothing half-written, `--overwrite` replaces only an earlier build).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import __version__
from .atomic import begin_output_dir, check_output, commit_output_dir, marker_fields
from .errors import InputError
from .layout import CARD_FILE, MANIFEST_FILE, config_dir, is_synthetic
from .pipeline import Pipeline
from .selection import SELECTION_DESCRIPTIONS
from .write.card import render_card
from .write.licenses import dataset_license, is_no_derivatives, is_non_commercial
from .write.manifest import describe_inputs, relative_to_source, write_manifest
from .write.parquet import write_split


@dataclass
class BuildResult:
    """What `build()` returns: the output folder, counts (config -> split -> source -> rows), content digest and manifest."""
    output: Path
    counts: dict[str, dict[str, dict[str, int]]]
    digest: str
    manifest: dict[str, Any]


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
    scores: str | os.PathLike[str] | None = None,
    dedup_against: Sequence[str | os.PathLike[str]] = (),
    near_dup_threshold: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> BuildResult:
    """Build PathEnhanceDS into `output` (README.md, data/<config>/<split>-*.parquet, manifest.json).

    Held-out splits are written first; a train row whose image duplicates a validation/test image
    of any source (or an image of a `dedup_against` benchmark) is dropped and reported. Writes into
    a temporary folder beside `output` and renames it at the end: a failed build leaves nothing.

    `executor="ray"` cuts and encodes rows in Ray Core tasks (one per slide for PathGen; `ray_address="auto"`
    joins a running cluster). Its per-task shards go to `.<output>.shards/` beside the output, are reused
    by a rerun after a failure, and are removed once the build is committed. Same rows and digest as local.
    """
    pipe = Pipeline(sources, recipe=recipe, seed=seed, options=options, num_proc=num_proc, on_error=on_error,
                    scores=scores, dedup_against=dedup_against, near_dup_threshold=near_dup_threshold,
                    executor=executor, ray_address=ray_address,
                    shard_dir=Path(output).expanduser().absolute().parent / f".{Path(output).name}.shards")
    # Refused before any slow work: an existing output that is not an earlier build, or the sources themselves.
    output = check_output(output, overwrite=overwrite, kind="dataset", protected=list(sources.values()))
    with pipe:
        if synthetic is None:
            synthetic = any(is_synthetic(s.path) for s in pipe.sources.values())
        tmp = begin_output_dir(output, kind="dataset")  # beside the output, user's umask; stale ones cleaned
        try:
            manifest = _write(pipe, tmp, output, synthetic=bool(synthetic))
            commit_output_dir(tmp, output, kind="dataset")
            shutil.rmtree(pipe.shard_dir, ignore_errors=True)  # the ray executor's resumable task shards
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return BuildResult(output, manifest["counts"], manifest["digest"], manifest)


def _write(pipe: Pipeline, tmp: Path, output: Path, *, synthetic: bool) -> dict[str, Any]:
    """Stream the pipeline's rows into parquet shards under `tmp`, then the manifest and the card."""
    digest = hashlib.sha256()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    shas: dict[str, dict[str, list[str]]] = defaultdict(dict)
    files: list[str] = []
    groups = pipe.groups()
    progress = tqdm(total=sum(pipe.planned(task, split) for task, split in groups), desc="building PathEnhanceDS",
                    unit="row")
    for task, split in groups:
        result = write_split(_progress(pipe.rows(task, split), progress), config_dir(tmp, task), split, digest)
        if result.rows:
            counts.setdefault(task, {})[split] = result.by_source
        for sha, ids in result.image_sha256.items():
            shas[split].setdefault(sha, []).extend(ids)
        files += [f.relative_to(tmp).as_posix() for f in result.files]
    progress.close()
    if not counts:
        raise InputError("the build produced no rows", fix="check the --source paths and the recipe's sizes")
    ctx, opened, recipe, seed, resolved = pipe.ctx, pipe.sources, pipe.recipe, pipe.seed, pipe.options
    score_table, scores = pipe.score_table, pipe.scores_path
    overlap = split_overlap(shas)
    roots = [s.path for s in opened.values()]
    skipped = [{**s, "file": relative_to_source(s["file"], roots)} for s in ctx.skipped]
    licenses = [s.license for s in opened.values()]
    dedup = pipe.dedup_report()
    manifest = {
        "name": "PathEnhanceDS",
        "library_version": __version__,
        "generator": marker_fields("dataset")["generator"],  # lets --overwrite recognise this build
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
        "selection_counts": ctx.counts,
        "split_overlap": overlap,
        "dedup": dedup,
        "license": dataset_license(licenses),
    }
    write_manifest(tmp / MANIFEST_FILE, manifest)
    card = render_card({
        "counts": counts, "recipe": recipe, "recipe_description": SELECTION_DESCRIPTIONS.get(recipe, ""),
        "seed": seed, "options": resolved, "version": __version__, "digest": manifest["digest"],
        "warnings": ctx.warnings, "notes": ctx.notes, "overlap": overlap, "skipped": skipped,
        "selection_counts": [{"source": src, "key": key, "label": ctx.count_labels.get(f"{src}/{key}", key), "n": n}
                             for src, by_key in ctx.counts.items() for key, n in by_key.items()],
        "license": manifest["license"], "non_commercial": is_non_commercial(licenses),
        "no_derivatives": is_no_derivatives(licenses),
        "sources": [{"name": n, "license": s.license, "description": s.description} for n, s in opened.items()],
        "synthetic": bool(synthetic), "load_path": output.name, "dedup": dedup,
        "scores": manifest["scores"], "file_sizes": {f: (tmp / f).stat().st_size for f in files},
    })
    (tmp / CARD_FILE).write_text(card)
    return manifest


def _progress(rows: Iterator[dict[str, Any]], bar: tqdm) -> Iterator[dict[str, Any]]:
    for row in rows:
        bar.update(1)
        yield row


