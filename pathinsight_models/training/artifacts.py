"""Artefacts of a training run: the metrics log, the loss plot, and a LoRA adapter merged into full weights.

("export" means dataset formats only: `pathenhanceds` writers and foreign-format exporters.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError


def resume_checkpoint(output_dir: str | Path) -> str:
    """The last `checkpoint-*` folder of an interrupted run, for `--resume`; an `InputError` if none."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last is None:
        raise InputError("--resume but output_dir has no checkpoint-* directory", file=out,
                         fix="drop --resume to start fresh, or point output_dir at the interrupted run")
    return last


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
    """Merge a LoRA adapter (and its modules_to_save) into the base weights; save model + processor.

    Loads through `loading.load_for_inference` (checkpoint dtype, CPU), so the processor follows the
    same rule as everywhere else: the adapter directory's when it has one, else the base model's.
    """
    from pathinsight_models.loading import adapter_base, load_for_inference

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise InputError("not a LoRA adapter directory (no adapter_config.json)", file=adapter_dir,
                         fix="pass the output_dir of a lora/qlora training run")
    base = base_model or adapter_base(str(adapter_dir))
    if not base:
        raise InputError("the adapter names no base model", file=adapter_dir / "adapter_config.json",
                         fix="pass the base model explicitly (--base DIR_OR_ID)")
    try:
        merged, processor, _ = load_for_inference(base, adapter=str(adapter_dir), device="cpu", dtype="auto",
                                                  fingerprint=False)
    except InputError as exc:
        if exc.file != str(base):
            raise
        raise InputError(f"cannot load the adapter's base model {base!r}: {exc.reason}", file=adapter_dir,
                         fix="pass the base model explicitly (--base DIR_OR_ID)") from exc
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    processor.save_pretrained(out)
    return out
