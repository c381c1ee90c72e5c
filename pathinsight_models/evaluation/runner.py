"""`pathinsight eval`: generate answers for the chosen tasks, score them, write results + predictions + report.

Output directory:
- ``results.json``: per task the metrics by mode with bootstrap CIs, n, parse failures, decoding
  parameters, prompts, and the model / data provenance and library versions;
- ``predictions/<task>.jsonl``: one line per item (id, prompt, prediction, reference, parsed, correct, ...);
- ``report.md`` (+ confusion-matrix PNGs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pathenhanceds.atomic import atomic_output_dir, check_output, marker_fields
from pathenhanceds.errors import InputError

from .backends import get_backend
from .data import data_digest, hub_revision, items_from_dataset, limit_items, load_config
from .distributed import (
    current_processes,
    execution_info,
    gather_answers,
    process_device,
    shard_indices,
    share_results,
)
from .generation import render_prompts
from .report import write_confusion_png, write_report
from .scoring import score_items, write_records
from .tasks import Item, Task, default_tasks, get_task

SCHEMA_VERSION = 1


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result, recorded in results.json."""
    import importlib.metadata as md

    from .. import __version__

    out = {"pathinsight": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "datasets", "evaluate", "rouge_score", "sacrebleu", "nltk",
                 "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def build_items(
    task: Task,
    *,
    data: Any = None,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    data_revision: str | None = None,
    pathmmu: str | Path | None = None,
    pathmmu_split: str | None = "test",
    pathmmu_prompt: str = "ours",
    loaded: dict[str, Any] | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[list[Item], dict[str, Any]]:
    """Items of one task and a description of the rows they came from.

    A task scored against a label set (the generic `classification`) gets `labels`, or else every label
    of its rows in the dataset (all splits).
    """
    if task.name == "pathmmu":
        from .tasks.pathmmu import find_data_json, read_pathmmu

        source = pathmmu or data
        if source is None or not isinstance(source, str | Path):
            raise InputError("the pathmmu task needs the PathMMU folder", fix="pass --pathmmu DIR (data.json + images)")
        items = limit_items(read_pathmmu(source, split=pathmmu_split, prompt_format=pathmmu_prompt), limit, seed)
        file = find_data_json(source)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        return items, {"path": str(source), "kind": "pathmmu", "split": pathmmu_split, "prompt_format": pathmmu_prompt,
                       "data_json_sha256": digest}
    if task.read_items is not None:  # the task reads a folder itself (explanation: configs + tables of K)
        if data is None or not isinstance(data, str | Path):
            raise InputError(f"task {task.name} needs a dataset folder", fix="pass --data DIR")
        return task.read_items(data, split=split, limit=limit, seed=seed, revision=data_revision)
    if data is None:
        raise InputError(f"task {task.name} needs PathEnhanceDS data", fix="pass --data DIR_OR_REPO")
    info: dict[str, Any] = {"config": task.config, "split": split}
    if isinstance(data, str | Path):
        data = str(data)
        loaded = {} if loaded is None else loaded
        key = f"{task.config}/{split}"
        if key not in loaded:
            loaded[key] = load_config(data, task.config or "all", split, data_revision)
        ds = loaded[key]
        info.update(data_digest(data))
        if info.get("kind") == "hub":
            info["revision"] = data_revision
            info["commit"] = hub_revision(data, data_revision)
    else:
        ds = data  # a datasets.Dataset of PathEnhanceDS rows (any config)
        info["kind"] = "in-memory"
    info["fingerprint"] = getattr(ds, "_fingerprint", None)
    items = items_from_dataset(ds, task, limit, seed)
    info["rows"] = len({it["id"].split("@")[0] for it in items})
    if "labels" in task.fields and items:
        from .tasks.classification import attach_labels, dataset_labels

        info["labels"] = attach_labels(items, labels or dataset_labels(data if isinstance(data, str) else ds, task,
                                                                        data_revision))
        info["labels_from"] = "--labels" if labels else "dataset label column"
    return items, info


def _check_labels_option(labels: Sequence[str] | None, tasks: Sequence[Task]) -> None:
    """`--labels` only means something for a task scored against a label set."""
    if labels and not any("labels" in t.fields for t in tasks):
        raise InputError("--labels applies to the `classification` task only",
                         fix="add --tasks classification, or drop --labels")


def _prompts_summary(items: Sequence[Item], top: int = 20) -> dict[str, Any]:
    counts = Counter(str(it.get("prompt")) for it in items)
    return {"distinct": len(counts), "most_common": [{"text": t, "count": c} for t, c in counts.most_common(top)]}


def run_evaluation(
    model: str,
    data: Any = None,
    tasks: Sequence[str] | None = None,
    *,
    output: str | Path,
    adapter: str | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    max_new_tokens: int | None = None,
    modes: dict[str, Sequence[str]] | None = None,
    pathmmu: str | Path | None = None,
    pathmmu_split: str | None = "test",
    pathmmu_prompt: str = "ours",
    dtype: str | None = None,
    device: str = "auto",
    model_revision: str | None = None,
    data_revision: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    labels: Sequence[str] | None = None,
    backend: str = "hf",
) -> dict[str, Any]:
    """Evaluate `model` (+ `adapter`) on `tasks`; write results.json, predictions/, report.md to `output`.

    `tasks` defaults to `evaluation.tasks.default_tasks()`. The model loads through
    `loading.load_for_inference` (its provenance becomes results.json's ``model``). `labels` is the class
    list of the generic `classification` task (default: the dataset's `label` column). `backend` is a
    `backends.BACKENDS` name (`hf`, `vllm`).

    Under `accelerate launch` (several processes) each process generates a shard of whole images,
    the main process gathers the answers in item order, scores and writes; every process returns the
    same results (`distributed`).
    """
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    engine_type = get_backend(backend)  # an unusable back-end (vLLM without vllm or GPU) fails first
    procs = current_processes()
    if procs.count > 1 and backend != "hf":
        raise InputError(f"the {backend} back-end runs in one process (it batches over the GPU itself)",
                         fix=f"run `pathinsight eval --backend {backend}` without accelerate launch")
    task_objs = [get_task(t) for t in (default_tasks() if tasks is None else tasks)]
    _check_labels_option(labels, task_objs)
    # Fail before loading data and model: never an input, cwd or home; --overwrite only an earlier eval output.
    protected = [p for p in (model, adapter, data, pathmmu) if isinstance(p, str | Path) and Path(p).exists()]
    check_output(output, overwrite=overwrite, kind="eval", protected=protected)
    loaded: dict[str, Any] = {}
    prepared: list[tuple[Task, list[Item], dict[str, Any]]] = []
    for task in task_objs:  # read every task's data before loading the model: fail fast on bad input
        with _main_process_first(procs):  # one process fills the datasets cache, the others read it
            items, info = build_items(task, data=data, split=split, limit=limit, seed=seed, data_revision=data_revision,
                                      pathmmu=pathmmu, pathmmu_split=pathmmu_split, pathmmu_prompt=pathmmu_prompt,
                                      loaded=loaded, labels=labels)
        if not items:
            raise InputError(f"no rows for task {task.name} in split {split!r}",
                             fix=f"the task reads config {task.config!r}, sources "
                                 f"{task.rows.describe_sources() if task.rows else None}")
        prepared.append((task, items, info))
    engine = engine_type.load(model, adapter, revision=model_revision, device=process_device(procs, device),
                              dtype=dtype)
    progress = progress and procs.is_main
    try:
        if not procs.is_main:  # generate this process's shards; the main process scores and writes
            for task, items, _ in prepared:
                _generate(engine, procs, items, max_new_tokens or task.max_new_tokens, batch_size, False, task.name)
            return share_results(procs, None)
        results = _write_run(engine, procs, prepared, output=output, overwrite=overwrite, protected=protected,
                             data=data, split=split, limit=limit, seed=seed, batch_size=batch_size,
                             max_new_tokens=max_new_tokens, modes=modes, n_resamples=n_resamples,
                             confidence=confidence, progress=progress)
        return share_results(procs, results)
    finally:
        engine.close()


@contextlib.contextmanager
def _main_process_first(procs: Any) -> Iterator[None]:
    if procs.count == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def _generate(engine: Any, procs: Any, items: list[Item], new_tokens: int, batch_size: int, progress: bool,
              desc: str) -> list[str] | None:
    """All answers in item order on the main process (None on the others): each process does its shard."""
    shard = shard_indices(items, procs.index, procs.count)
    answers = engine.generate([items[i] for i in shard], max_new_tokens=new_tokens, batch_size=batch_size,
                              progress=progress, desc=desc)
    return gather_answers(procs, shard, answers, len(items))


def _write_run(engine: Any, procs: Any, prepared: list[tuple[Task, list[Item], dict[str, Any]]], *,
               output: str | Path, overwrite: bool, protected: list[Any], data: Any, split: str, limit: int | None,
               seed: int, batch_size: int, max_new_tokens: int | None, modes: dict[str, Sequence[str]] | None,
               n_resamples: int, confidence: float, progress: bool) -> dict[str, Any]:
    """Generate (gathering the shards), score and write every task: the main process's part of a run."""
    processor, model_info = engine.processor, engine.info
    # Written beside the target and swapped in at the end; --overwrite replaces only an earlier eval output.
    with atomic_output_dir(output, overwrite=overwrite, kind="eval", protected=protected) as out:
        (out / "predictions").mkdir()
        results: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "generator": marker_fields("eval")["generator"],  # lets --overwrite recognise it
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": model_info,
            "data": data_digest(data) if isinstance(data, str | Path) else {"kind": "in-memory"},
            "split": split,
            "limit": limit,
            "seed": seed,
            "batch_size": batch_size,
            "execution": execution_info(procs, engine.backend),  # differs between equal runs: see distributed
            "versions": library_versions(),
            "tasks": {},
        }
        for task, items, info in tqdm(prepared, desc="tasks", unit="task", disable=not progress or len(prepared) < 2):
            new_tokens = max_new_tokens or task.max_new_tokens
            start = time.perf_counter()
            answers = _generate(engine, procs, items, new_tokens, batch_size, progress, task.name)
            assert answers is not None  # the main process holds every answer
            seconds = time.perf_counter() - start
            for item, answer in zip(items, answers, strict=True):
                item["prediction"] = answer
            result, records = score_items(task, items, (modes or {}).get(task.name), n_resamples=n_resamples,
                                          seed=seed, confidence=confidence)
            result["decoding"] = engine.decoding(new_tokens)
            result["prompts"] = _prompts_summary(items)
            result["rendered_prompt_example"] = render_prompts(processor, items[:1])[0]
            result["data"] = info
            result["generation_seconds"] = round(seconds, 3)
            result["predictions"] = f"predictions/{task.name}.jsonl"
            write_records(out / result["predictions"], records)
            if "confusion_matrix" in result["extras"]:
                result["confusion_png"] = write_confusion_png(result, out / f"confusion_{task.name}.png")
            results["tasks"][task.name] = result
        (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_report(results, out / "report.md")
    return results


def score_file(
    task: str,
    predictions: str | Path,
    *,
    output: str | Path | None = None,
    modes: Sequence[str] | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    overwrite: bool = False,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score a JSONL of predictions made anywhere, with the same parsers, metrics and report.

    `labels`: the class list of the generic `classification` task (default: the items' labels).
    """
    from .scoring import read_predictions

    task_obj = get_task(task)
    _check_labels_option(labels, [task_obj])
    target = Path(output) if output else Path(predictions).with_suffix("").parent / f"{Path(predictions).stem}_scored"
    check_output(target, overwrite=overwrite, kind="eval", protected=[predictions])  # before any work
    items = read_predictions(predictions, task_obj)
    if labels:
        from .tasks.classification import attach_labels

        attach_labels(items, labels)
    result, records = score_items(task_obj, items, modes, n_resamples=n_resamples, seed=seed, confidence=confidence)
    result["predictions"] = f"predictions/{task_obj.name}.jsonl"
    result["source_file"] = str(predictions)
    result["source_sha256"] = hashlib.sha256(Path(predictions).read_bytes()).hexdigest()
    with atomic_output_dir(target, overwrite=overwrite, kind="eval", protected=[predictions]) as out:
        write_records(out / result["predictions"], records)
        if "confusion_matrix" in result["extras"]:
            result["confusion_png"] = write_confusion_png(result, out / f"confusion_{task_obj.name}.png")
        results = {
            "schema_version": SCHEMA_VERSION,
            "generator": marker_fields("eval")["generator"],  # lets --overwrite recognise it
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": {"id": f"predictions:{Path(predictions).name}"},
            "data": {"kind": "predictions-file", "path": str(predictions), "digest": result["source_sha256"]},
            "seed": seed,
            "versions": library_versions(),
            "tasks": {task_obj.name: result},
        }
        (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_report(results, out / "report.md")
    return results
