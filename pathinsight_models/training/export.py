"""Artifacts of a training run (metrics log, loss plot) and merging a LoRA adapter into full weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError


def write_metrics(log_history: list[dict[str, Any]], output_dir: str | Path) -> Path:
    """One JSON object per logged step (`metrics.jsonl`)."""
    path = Path(output_dir) / "metrics.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for entry in log_history:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return path


def plot_loss(log_history: list[dict[str, Any]], output_dir: str | Path) -> Path | None:
    """Training (and eval) loss against step as `loss.png`; None when nothing was logged."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", marker="." if len(train) < 50 else None)
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(output_dir) / "loss.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, base_model: str | None = None) -> Path:
    """Merge a LoRA adapter (and its modules_to_save) into the base weights; save model + processor."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise InputError("not a LoRA adapter directory (no adapter_config.json)", file=adapter_dir,
                         fix="pass the output_dir of a lora/qlora training run")
    config = PeftConfig.from_pretrained(str(adapter_dir))
    base = base_model or config.base_model_name_or_path
    try:
        model = AutoModelForImageTextToText.from_pretrained(base, dtype="auto")
    except OSError as exc:
        raise InputError(f"cannot load the adapter's base model {base!r}: {exc}", file=adapter_dir,
                         fix="pass the base model explicitly (--base DIR_OR_ID)") from exc
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    processor_source = str(adapter_dir) if (adapter_dir / "processor_config.json").exists() else base
    AutoProcessor.from_pretrained(processor_source).save_pretrained(out)
    return out
