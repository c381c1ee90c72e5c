"""One loader for inference: `load_for_inference(model, adapter=...) -> (model, processor, provenance)`.

Used by `pathinsight eval` (the runner), `pathinsight chat` and the demo Space, adapter merging
(`training.artifacts.merge_adapter`) and the leaderboard worker, so they all agree on:

- *what loads*: a Hub id or local directory of a full/merged model, or of a PEFT adapter (its base
  comes from `adapter_config.json`), plus optionally a separate adapter (`adapter=`) that is merged
  into the weights for faster generation;
- *revision pinning*: `from_pretrained(adapter_repo, revision=sha)` also looks for `sha` in the base
  repo and fails, so a pinned adapter repo is loaded from a snapshot at that revision instead;
- *the processor rule*: the adapter's processor when it has one, else the model's, else (for an
  adapter repo without processor files) its base model's;
- *dtype/device*: ``device="auto"`` is CUDA when available, else CPU; ``dtype=None`` is float32 on CPU
  (fastest and exact there) and the checkpoint's dtype on GPU; ``"auto"`` is always the checkpoint's;
- *provenance*: what was asked for and what was actually loaded (commit shas, digests of local
  directories, base model, dtype, device), recorded in `results.json`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

# Files that make a directory a processor source (a tokenizer alone is not a VLM processor).
PROCESSOR_CONFIGS = ("processor_config.json", "preprocessor_config.json")
_FULL_HASH_LIMIT = 64 * 2**20  # files above this size are fingerprinted by size + first/last MiB


def adapter_base(model_id: str, revision: str | None = None) -> str | None:
    """The base model a PEFT adapter repo/dir names, or None if `model_id` is not an adapter."""
    try:
        from peft import PeftConfig

        return PeftConfig.from_pretrained(model_id, revision=revision).base_model_name_or_path
    except (OSError, ValueError, ImportError):
        return None


def pin_adapter_revision(model_id: str, revision: str | None, base: str | None = None) -> tuple[str, str | None]:
    """(source, revision) to pass to `from_pretrained`: a local snapshot for a pinned adapter repo.

    `from_pretrained(adapter_repo, revision=sha)` also looks for that revision in the *base* repo and
    fails; a pinned adapter repo is therefore loaded from a snapshot at that revision instead (its base
    comes from adapter_config.json, at the base repo's default branch). `base` is `adapter_base(...)`
    when the caller already knows it.
    """
    if not revision or Path(model_id).is_dir():
        return model_id, revision
    if base is None and adapter_base(model_id, revision) is None:
        return model_id, revision
    from huggingface_hub import snapshot_download

    return snapshot_download(model_id, revision=revision), None


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


def has_processor_files(path: str | Path) -> bool:
    """True when the local directory `path` holds a saved (image) processor."""
    return any((Path(path) / name).is_file() for name in PROCESSOR_CONFIGS)


def resolve_device(device: str = "auto") -> str:
    """`device`, with "auto" resolved to "cuda" when available, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """The `dtype=` for `from_pretrained`: None -> float32 on CPU / checkpoint's on GPU; "auto" -> checkpoint's."""
    import torch

    if dtype is None:  # CPU kernels are fastest and exact in float32; on GPU keep the checkpoint's dtype
        dtype = "float32" if device == "cpu" else "auto"
    if dtype == "auto":
        return "auto"
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}", fix="use auto, float32, bfloat16 or float16")
    return value


def _hub_commit(repo_id: str, revision: str | None, filename: str) -> str | None:
    """Commit sha of a cached Hub file (`.../snapshots/<sha>/<filename>`), without a network call."""
    if Path(repo_id).is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    except (ValueError, OSError):  # not a repo id
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def _snapshot_commit(path: str) -> str | None:
    """The sha of a `snapshot_download` folder (`.../snapshots/<sha>`), else None."""
    p = Path(path)
    return p.name if p.parent.name == "snapshots" else None


def _load_processor(model: str, candidates: list[tuple[str, str | None]]) -> tuple[Any, str]:
    """The first processor that loads from (source, revision) candidates; local dirs need processor files."""
    from transformers import AutoProcessor

    last_error: Exception | None = None
    for source, revision in candidates:
        if Path(source).is_dir() and not has_processor_files(source):
            continue
        try:
            return AutoProcessor.from_pretrained(source, revision=revision), source
        except (OSError, ValueError) as exc:  # e.g. an adapter repo without processor files: try the next one
            last_error = exc
    tried = ", ".join(source for source, _ in candidates)
    detail = f": {last_error}" if last_error else ""
    raise InputError(f"{model} has no processor files (looked in {tried}){detail}", file=model,
                     fix="save the processor next to the weights (`processor.save_pretrained(dir)`)")


def load_for_inference(
    model: str,
    adapter: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
    adapter_revision: str | None = None,
    *,
    merge_adapter: bool = True,
    fingerprint: bool = True,
) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode on `device`, processor, provenance) for a Hub id or local directory.

    `model` is a full or merged model, or a PEFT adapter (its base is loaded from
    `adapter_config.json`); `adapter` is an optional extra PEFT adapter applied on top and, with
    `merge_adapter` (default), merged into the weights (one matmul per layer instead of two).
    `revision` / `adapter_revision` pin Hub revisions; `fingerprint=False` skips hashing local
    directories (e.g. when merging, where nothing is recorded).

    The provenance dict holds ``id``, ``revision`` (as asked), ``commit`` (the resolved Hub sha),
    ``class``, ``base_model`` and ``base_commit`` (when `model` is an adapter), ``digest`` (local
    directories), ``adapter``, ``adapter_revision``, ``adapter_commit``, ``adapter_merged``,
    ``adapter_digest``, ``processor_from``, ``dtype``, ``device`` and ``parameters``.
    """
    from transformers import AutoModelForImageTextToText

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    base = adapter_base(model, revision)
    if base is not None and revision and not Path(model).is_dir():
        source, source_revision = pin_adapter_revision(model, revision, base)
    else:
        source, source_revision = model, revision
    try:
        loaded = AutoModelForImageTextToText.from_pretrained(source, revision=source_revision, dtype=torch_dtype)
    except OSError as exc:
        raise InputError(f"cannot load model {model}: {exc}", file=model,
                         fix="pass a Hub id or a directory saved with save_pretrained "
                             "(`pathinsight train` output, `pathinsight models tiny`)") from None
    info: dict[str, Any] = {"id": model, "revision": revision, "class": type(loaded).__name__}
    config_commit = getattr(loaded.config, "_commit_hash", None)
    if base is None:
        info["commit"] = config_commit
    else:  # the config is the base model's: its commit is the base's, the adapter's comes from its files
        info["commit"] = _snapshot_commit(source) or _hub_commit(model, revision, "adapter_config.json")
        info["base_model"] = base
        info["base_commit"] = config_commit
    if fingerprint and Path(model).is_dir():
        info["digest"] = local_fingerprint(Path(model))

    processors: list[tuple[str, str | None]] = [(source, source_revision)]
    if adapter:
        from peft import PeftModel

        try:
            loaded = PeftModel.from_pretrained(loaded, adapter, revision=adapter_revision)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load adapter {adapter}: {exc}", file=adapter) from None
        if merge_adapter:
            loaded = loaded.merge_and_unload()
        info.update(adapter=adapter, adapter_revision=adapter_revision, adapter_merged=merge_adapter,
                    adapter_commit=_hub_commit(adapter, adapter_revision, "adapter_config.json"))
        if fingerprint and Path(adapter).is_dir():
            info["adapter_digest"] = local_fingerprint(Path(adapter))
        processors.insert(0, (adapter, adapter_revision))
    if base is not None:
        processors.append((base, None))  # an adapter repo without processor files: its base model's
    processor, processor_source = _load_processor(model, processors)
    info["processor_from"] = model if processor_source == source else processor_source  # never a cache path
    loaded.to(device).eval()
    info["dtype"] = str(next(loaded.parameters()).dtype).replace("torch.", "")
    info["device"] = device
    info["parameters"] = int(sum(p.numel() for p in loaded.parameters()))
    return loaded, processor, info
