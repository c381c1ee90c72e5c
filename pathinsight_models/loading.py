"""Loading helpers shared by the chat demo and the evaluation runner."""

from __future__ import annotations

from pathlib import Path


def adapter_base(model_id: str, revision: str | None = None) -> str | None:
    """The base model a PEFT adapter repo/dir names, or None if `model_id` is not an adapter."""
    try:
        from peft import PeftConfig

        return PeftConfig.from_pretrained(model_id, revision=revision).base_model_name_or_path
    except (OSError, ValueError, ImportError):
        return None


def pin_adapter_revision(model_id: str, revision: str | None) -> tuple[str, str | None]:
    """(model_id, revision) to pass to `from_pretrained`.

    `from_pretrained(adapter_repo, revision=sha)` also looks for that revision in the *base* repo and
    fails; a pinned adapter repo is therefore loaded from a snapshot at that revision instead (its base
    comes from adapter_config.json).
    """
    if revision and not Path(model_id).is_dir() and adapter_base(model_id, revision) is not None:
        from huggingface_hub import snapshot_download

        return snapshot_download(model_id, revision=revision), None
    return model_id, revision
