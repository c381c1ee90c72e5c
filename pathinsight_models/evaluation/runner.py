"""`pathinsight eval`: generate answers for the chosen tasks, score them, write results + predictions + report.

Output directory:
- ``results.json``: per task the metrics by mode with bootstrap CIs, n, parse failures, decoding
  parameters, prompts, and the model / data provenance and library versions;
- ``predictions/<task>.jsonl``: one line per item (id, prompt, prediction, reference, parsed, correct, ...);
- ``report.md`` (+ confusion-matrix PNGs).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pathenhanceds.errors import InputError
from pathinsight_models.loading import pin_adapter_revision

from .data import data_digest, hub_revision, items_from_dataset, limit_items, load_config
from .generation import decoding_params, generate, greedy_config, render_prompts
from .report import write_confusion_png, write_report
from .scoring import score_items, write_records
from .tasks import Item, Task, get_task

DEFAULT_TASKS = ("crc", "pcam", "captioning", "pathvqa")
SCHEMA_VERSION = 1
_FULL_HASH_LIMIT = 64 * 2**20  # files above this size are fingerprinted by size + first/last MiB


def library_versions() -> dict[str, str]:
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


def local_fingerprint(path: Path) -> str:
    """sha256 over (relative path, size, content hash) of every file; big files by size + first/last MiB."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = file.stat().st_size
        h = hashlib.sha256()
        with file.open("rb") as fh:
            if size <= _FULL_HASH_LIMIT:
                h.update(fh.read())
            else:
                h.update(fh.read(2**20))
                fh.seek(size - 2**20)
                h.update(fh.read())
        digest.update(f"{file.relative_to(path)}\t{size}\t{h.hexdigest()}\n".encode())
    return digest.hexdigest()


def _has_processor_files(path: Path) -> bool:
    names = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json", "chat_template.jinja")
    return any((path / n).is_file() for n in names)


def load_model(
    model_id: str,
    adapter: str | None = None,
    *,
    dtype: str | None = None,
    device: str = "auto",
    revision: str | None = None,
    merge_adapter: bool = True,
) -> tuple[Any, Any, dict[str, Any]]:
    """(model, processor, provenance) for a Hub id or local directory, plus an optional PEFT adapter."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:  # CPU kernels are fastest and exact in float32; on GPU keep the checkpoint's dtype
        dtype = "float32" if device == "cpu" else "auto"
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    requested_id, requested_revision = model_id, revision
    model_id, revision = pin_adapter_revision(model_id, revision)
    try:
        model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=torch_dtype, revision=revision)
    except OSError as exc:
        raise InputError(f"cannot load model {model_id}: {exc}", file=model_id,
                         fix="pass a Hub id or a directory saved with save_pretrained") from None
    processor_source = model_id
    info: dict[str, Any] = {"id": requested_id, "revision": requested_revision, "class": type(model).__name__}
    info["commit"] = getattr(model.config, "_commit_hash", None)
    if Path(requested_id).is_dir():
        info["digest"] = local_fingerprint(Path(requested_id))
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load adapter {adapter}: {exc}", file=adapter) from None
        if merge_adapter:
            model = model.merge_and_unload()  # one matmul per layer instead of two: faster generation
        info["adapter"] = adapter
        info["adapter_merged"] = merge_adapter
        if Path(adapter).is_dir():
            info["adapter_digest"] = local_fingerprint(Path(adapter))
            if _has_processor_files(Path(adapter)):
                processor_source = adapter
    processor = AutoProcessor.from_pretrained(processor_source, revision=None if processor_source == adapter else revision)
    model.to(device).eval()
    info["processor_from"] = processor_source
    info["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    info["device"] = device
    info["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return model, processor, info


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
    loaded: dict[str, Any] | None = None,
) -> tuple[list[Item], dict[str, Any]]:
    """Items of one task and a description of the rows they came from."""
    if task.name == "pathmmu":
        from .pathmmu import find_data_json, read_pathmmu

        source = pathmmu or data
        if source is None or not isinstance(source, str | Path):
            raise InputError("the pathmmu task needs the PathMMU folder", fix="pass --pathmmu DIR (data.json + images)")
        items = limit_items(read_pathmmu(source, split=pathmmu_split), limit, seed)
        file = find_data_json(source)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        return items, {"path": str(source), "kind": "pathmmu", "split": pathmmu_split, "data_json_sha256": digest}
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
    return items, info


def _prompts_summary(items: Sequence[Item], top: int = 20) -> dict[str, Any]:
    counts = Counter(str(it.get("prompt")) for it in items)
    return {"distinct": len(counts), "most_common": [{"text": t, "count": c} for t, c in counts.most_common(top)]}


def run_evaluation(
    model: str,
    data: Any = None,
    tasks: Sequence[str] = DEFAULT_TASKS,
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
    dtype: str | None = None,
    device: str = "auto",
    model_revision: str | None = None,
    data_revision: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `model` (+ `adapter`) on `tasks`; write results.json, predictions/, report.md to `output`."""
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    task_objs = [get_task(t) for t in tasks]
    out = Path(output)
    loaded: dict[str, Any] = {}
    prepared: list[tuple[Task, list[Item], dict[str, Any]]] = []
    for task in task_objs:  # read every task's data before loading the model: fail fast on bad input
        items, info = build_items(task, data=data, split=split, limit=limit, seed=seed, data_revision=data_revision,
                                  pathmmu=pathmmu, pathmmu_split=pathmmu_split, loaded=loaded)
        if not items:
            raise InputError(f"no rows for task {task.name} in split {split!r}",
                             fix=f"the task reads config {task.config!r}, sources {task.sources}")
        prepared.append((task, items, info))
    model_obj, processor, model_info = load_model(model, adapter, dtype=dtype, device=device, revision=model_revision)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model_info,
        "data": data_digest(data) if isinstance(data, str | Path) else {"kind": "in-memory"},
        "split": split,
        "limit": limit,
        "seed": seed,
        "batch_size": batch_size,
        "versions": library_versions(),
        "tasks": {},
    }
    for task, items, info in tqdm(prepared, desc="tasks", unit="task", disable=not progress or len(prepared) < 2):
        new_tokens = max_new_tokens or task.max_new_tokens
        start = time.perf_counter()
        answers = generate(model_obj, processor, items, max_new_tokens=new_tokens, batch_size=batch_size,
                           progress=progress, desc=f"{task.name}")
        seconds = time.perf_counter() - start
        for item, answer in zip(items, answers, strict=True):
            item["prediction"] = answer
        result, records = score_items(task, items, (modes or {}).get(task.name), n_resamples=n_resamples,
                                      seed=seed, confidence=confidence)
        pad = getattr(getattr(processor, "tokenizer", processor), "pad_token_id", None)
        result["decoding"] = decoding_params(greedy_config(model_obj, new_tokens, pad))
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
) -> dict[str, Any]:
    """Score a JSONL of predictions made anywhere, with the same parsers, metrics and report."""
    from .scoring import read_predictions

    task_obj = get_task(task)
    items = read_predictions(predictions, task_obj)
    result, records = score_items(task_obj, items, modes, n_resamples=n_resamples, seed=seed, confidence=confidence)
    out = Path(output) if output else Path(predictions).with_suffix("").parent / f"{Path(predictions).stem}_scored"
    result["predictions"] = f"predictions/{task_obj.name}.jsonl"
    result["source_file"] = str(predictions)
    result["source_sha256"] = hashlib.sha256(Path(predictions).read_bytes()).hexdigest()
    write_records(out / result["predictions"], records)
    if "confusion_matrix" in result["extras"]:
        result["confusion_png"] = write_confusion_png(result, out / f"confusion_{task_obj.name}.png")
    results = {
        "schema_version": SCHEMA_VERSION,
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
