"""What a training run starts from: a model, an adapter to continue, or an adapter merged in first.

`model_name_or_path` may be

- (a) a base, merged or fully fine-tuned model: trained as the recipe says;
- (b) a LoRA adapter (a directory or Hub repo with `adapter_config.json`, e.g. an earlier
  `pathinsight train --method lora` run or a published PathInsight adapter): its base model is loaded
  and the *same* adapter keeps training (`PeftModel.from_pretrained(..., is_trainable=True)`), with
  its rank, targets and saved modules (a trained projector comes along); the output adapter names
  the original base model;

and `--adapter A` (c) merges adapter A into `model_name_or_path` before training, which then stacks
a new adapter (`--method lora`) or fine-tunes the merged weights (`--method full`).

Adapter detection, revision pinning and commit look-ups are those of `pathinsight_models.loading`
(the inference loader), so training and inference agree on what an id means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.loading import (
    _hub_commit,
    _snapshot_commit,
    adapter_base,
    has_processor_files,
    local_fingerprint,
    pin_adapter_revision,
)

logger = logging.getLogger("pathinsight.training")

KINDS = ("model", "adapter", "stacked")
# Files a run writes beside a stacked adapter: the merged parent it applies to.
PARENT_DIR = "parent_merged"


@dataclass
class StartingPoint:
    """Where a run starts: `kind` is model (a), adapter (b: continue it) or stacked (c: merge, then train)."""

    kind: str
    base: str  # the model whose weights are loaded first (an adapter's original base)
    base_revision: str | None
    adapter: str | None = None  # the adapter as the user named it (b: continued, c: merged in)
    adapter_source: str | None = None  # where it loads from (a snapshot folder when a Hub revision is pinned)
    adapter_revision: str | None = None
    processor_sources: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def continues_adapter(self) -> bool:
        """True when the run keeps training an existing adapter (b)."""
        return self.kind == "adapter"


def _adapter_base_revision(source: str, revision: str | None) -> str | None:
    from peft import PeftConfig

    try:
        return getattr(PeftConfig.from_pretrained(source, revision=revision), "revision", None)
    except (OSError, ValueError):
        return None


def _is_hub_default(revision: str | None) -> bool:
    return revision in (None, "", "main")


def resolve_starting_point(model_id: str, revision: str | None, adapter: str | None,
                           adapter_revision: str | None, method: str) -> StartingPoint:
    """Classify `model_name_or_path` / `--adapter` into (a), (b) or (c); contradictions are InputErrors."""
    revision = None if _is_hub_default(revision) else revision
    base = adapter_base(model_id, revision)
    if base is None and _looks_like_adapter(model_id):
        raise InputError("cannot read adapter_config.json", file=model_id, fix="pass a PEFT adapter directory")
    if base is not None:
        if adapter:
            raise InputError(
                f"model_name_or_path is a LoRA adapter and --adapter {adapter} is given too",
                file=model_id,
                fix="continue the adapter (pass it as model_name_or_path alone), or stack on it "
                    "(--model_name_or_path <its base> --adapter <it>)",
            )
        if method == "full":
            raise InputError(
                "model_name_or_path is a LoRA adapter: continuing it needs method lora/qlora",
                file=model_id,
                fix=f"to fine-tune its merged weights fully: --model_name_or_path {base} --adapter {model_id} "
                    "--method full",
            )
        source, source_revision = pin_adapter_revision(model_id, revision, base)
        processors = [(source, source_revision), (base, None)]
        return StartingPoint("adapter", base, _adapter_base_revision(source, source_revision), model_id, source,
                             source_revision, processors)
    if not adapter:
        return StartingPoint("model", model_id, revision, processor_sources=[(model_id, revision)])
    adapter_revision = None if _is_hub_default(adapter_revision) else adapter_revision
    named_base = adapter_base(adapter, adapter_revision)
    if named_base is None:
        raise InputError("--adapter is not a LoRA adapter (no readable adapter_config.json)", file=adapter,
                         fix="pass the output_dir of a lora run or a PEFT adapter repo")
    if method == "qlora":
        raise InputError("--adapter cannot be merged into 4-bit weights", file=adapter,
                         fix="merge it first (`pathinsight models merge`) and train qlora on the merged model, "
                             "or use method lora")
    if Path(named_base).name != Path(model_id).name:  # the same weights may be a Hub id here, a folder there
        logger.warning("adapter %s was trained on %s, now merged into %s", adapter, named_base, model_id)
    source, source_revision = pin_adapter_revision(adapter, adapter_revision, named_base)
    return StartingPoint("stacked", model_id, revision, adapter, source, source_revision,
                         [(source, source_revision), (model_id, revision)])


def _looks_like_adapter(model_id: str) -> bool:
    return (Path(model_id).expanduser() / "adapter_config.json").is_file()


def load_processor_from(sources: list[tuple[str, str | None]], settings: dict[str, Any],
                        trust_remote_code: bool) -> Any:
    """The first processor that loads from (source, revision) candidates; local dirs need processor files."""
    from transformers import AutoProcessor

    last: Exception | None = None
    for source, revision in sources:
        if Path(source).is_dir() and not has_processor_files(source):
            continue
        try:
            return AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code,
                                                 **settings)
        except (OSError, ValueError) as exc:
            last = exc
    raise InputError(f"no processor found (looked in {', '.join(s for s, _ in sources)})"
                     + (f": {last}" if last else ""), file=sources[0][0],
                     fix="save the processor next to the weights (`processor.save_pretrained(dir)`)")


def apply_adapter(model: Any, point: StartingPoint) -> Any:
    """(b) wrap `model` in the continued, trainable adapter; (c) merge the adapter in; (a) unchanged."""
    if point.kind == "model":
        return model
    from peft import PeftModel

    try:
        wrapped = PeftModel.from_pretrained(model, point.adapter_source, revision=point.adapter_revision,
                                            is_trainable=point.continues_adapter)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load adapter {point.adapter}: {exc}", file=point.adapter,
                         fix="the adapter must have been trained on this base model's architecture") from None
    if point.continues_adapter:
        return wrapped
    return wrapped.merge_and_unload()


def save_merged_parent(model: Any, processor: Any, out: Path) -> Path:
    """(c) the merged parent weights a stacked adapter applies to, saved under `out/parent_merged`."""
    target = out / PARENT_DIR
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


def _commit_of(name: str, revision: str | None, source: str | None, filename: str) -> str | None:
    if Path(name).is_dir():
        return None
    return _snapshot_commit(source or "") or _hub_commit(name, revision, filename)


def lineage(point: StartingPoint, base_config: Any) -> dict[str, Any]:
    """What the run descends from, with resolved commits (Hub) or content digests (local folders)."""
    base_commit = None
    if not Path(point.base).is_dir():  # transformers 5 configs no longer carry `_commit_hash`: ask the cache
        base_commit = getattr(base_config, "_commit_hash", None) or _hub_commit(point.base, point.base_revision,
                                                                                "config.json")
    out: dict[str, Any] = {"start": point.kind, "base_model": point.base,
                           "base_revision": base_commit or point.base_revision}
    if point.adapter:
        out["parent"] = point.adapter
        out["parent_kind"] = "adapter"
        out["parent_revision"] = _commit_of(point.adapter, point.adapter_revision, point.adapter_source,
                                            "adapter_config.json") or point.adapter_revision
        if Path(point.adapter).is_dir():
            out["parent_digest"] = local_fingerprint(Path(point.adapter))
    else:
        out["parent"] = point.base
        out["parent_kind"] = "model"
        out["parent_revision"] = out["base_revision"]
    return out


def pin_recipe_revisions(recipe: Any, point: StartingPoint, lineage_info: dict[str, Any]) -> None:
    """Write the resolved Hub commits into the recipe (saved as `recipe.yaml`), so a rerun loads the same weights."""
    if point.kind == "adapter":
        if lineage_info.get("parent_revision"):
            recipe.model.model_revision = lineage_info["parent_revision"]
    else:
        if lineage_info.get("base_revision"):
            recipe.model.model_revision = lineage_info["base_revision"]
        if point.kind == "stacked" and lineage_info.get("parent_revision"):
            recipe.args.adapter_revision = lineage_info["parent_revision"]
