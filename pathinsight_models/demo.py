"""`pathinsight demo` (= `make demo`): the whole pipeline, offline, on the shipped synthetic sample.

sample → build PathEnhanceDS → tiny LLaVA-architecture model (random init) → evaluate base →
full fine-tune → evaluate tuned → Table-2-shaped comparison → push-ready folders with cards →
`from_pretrained` the staged model and answer one question about a test image.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A ~230K-parameter LLaVA (CLIP vision tower + projector + Llama): large enough to learn the nine
# synthetic CRC textures from scratch in a couple of CPU minutes, small enough to run anywhere.
TINY_LLAVA = {"image_size": 32, "patch_size": 4, "hidden_size": 64, "num_layers": 2, "vision_hidden_size": 64,
              "intermediate_size": 128, "vision_intermediate_size": 128}
CRC_F1_GOAL = 0.9
DEMO_MODEL_ID = "pathinsight-demo/tiny-llava-pathenhanceds"
DEMO_BASE_ID = "pathinsight-demo/tiny-llava-random"
DEMO_DATASET_ID = "pathinsight-demo/PathEnhanceDS-synthetic"


@dataclass
class DemoSettings:
    """Knobs of `run_demo` (the `pathinsight demo` flags)."""

    output: Path = Path("demo_output")
    seed: int = 0
    train_config: str = "all"
    max_steps: int = 500
    batch_size: int = 8
    learning_rate: float = 2e-3
    eval_limit: int | None = None  # rows (whole images) per task; None = the whole test split


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def _headline(results: dict[str, Any], task: str, mode: str, metric: str) -> float:
    return float(results["tasks"][task]["metrics"][mode][metric]["value"])


def fresh_output(output: Path, seed: int) -> Path:
    """The demo's output folder, emptied and marked as a demo's; seeds torch.

    Replaces only an earlier demo folder (its marker is written first, so a crashed demo reruns too);
    never a folder of the user's, the current directory, the home folder or `/`.
    """
    import torch

    from pathenhanceds.atomic import check_output, write_marker

    out = check_output(output, overwrite=True, kind="demo")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_marker(out, "demo")
    torch.manual_seed(seed)
    return out


def training_arguments(batch_size: int, learning_rate: float, seed: int) -> dict[str, Any]:
    """The training arguments every demo run shares: cosine schedule, 5% warm-up, no checkpoints."""
    return {"per_device_train_batch_size": batch_size, "learning_rate": learning_rate, "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05, "logging_steps": 25, "save_strategy": "no", "max_length": 512, "seed": seed}


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Run every stage; returns a summary (also written to OUTPUT/summary.json)."""
    from pathenhanceds.build import build
    from pathenhanceds.sample import write_sample
    from pathenhanceds.stats import format_counts
    from pathinsight_models.chat import answer, load
    from pathinsight_models.evaluation.report import compare
    from pathinsight_models.evaluation.runner import run_evaluation
    from pathinsight_models.evaluation.tasks import default_tasks
    from pathinsight_models.publish.model import prepare_model_folder
    from pathinsight_models.tiny import save_tiny_model
    from pathinsight_models.training import train

    out = fresh_output(settings.output, settings.seed)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    t = _step("1/7 synthetic raw sources (native formats) → build PathEnhanceDS")
    sources = write_sample(out / "raw", seed=settings.seed)
    dataset = build(sources, out / "pathenhanceds", seed=settings.seed)
    print(format_counts(dataset.counts))
    timings["sample+build"] = time.perf_counter() - t

    t = _step("2/7 tiny LLaVA-architecture model, randomly initialised")
    base = save_tiny_model("llava", out / "models" / "base", seed=settings.seed, **TINY_LLAVA)
    from transformers import AutoModelForImageTextToText

    n_params = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(base).parameters())
    print(f"{base}: {n_params:,} parameters")
    timings["model"] = time.perf_counter() - t

    t = _step("3/7 evaluate the base model on the test split")
    eval_kwargs = {"data": str(dataset.output), "tasks": default_tasks(), "split": "test", "seed": settings.seed,
                   "limit": settings.eval_limit}
    base_results = run_evaluation(str(base), output=out / "eval" / "base", **eval_kwargs)
    timings["eval base"] = time.perf_counter() - t

    t = _step(f"4/7 full fine-tune on the `{settings.train_config}` config ({settings.max_steps} steps)")
    run_dir = train({
        "model_name_or_path": str(base), "dataset_name": str(dataset.output),
        "dataset_config": settings.train_config, "output_dir": str(out / "runs" / "tuned"), "method": "full",
        "max_steps": settings.max_steps, **training_arguments(settings.batch_size, settings.learning_rate, settings.seed),
    })
    timings["train"] = time.perf_counter() - t

    t = _step("5/7 evaluate the fine-tuned model and compare (the paper's Table 2 shape)")
    tuned_results = run_evaluation(str(run_dir), output=out / "eval" / "tuned", **eval_kwargs)
    markdown, png = compare([out / "eval" / "base" / "results.json", out / "eval" / "tuned" / "results.json"],
                            labels=["base (random init)", "full FT"], output=out / "compare")
    print(markdown)
    timings["eval tuned+compare"] = time.perf_counter() - t

    t = _step("6/7 push-ready folders with cards")
    staged = prepare_model_folder(
        run_dir, DEMO_MODEL_ID, out / "push" / "model", results=out / "eval" / "tuned" / "results.json",
        base_model_id=DEMO_BASE_ID, dataset_id=DEMO_DATASET_ID, base_license="apache-2.0",
        dataset_license=dataset.manifest["license"], offline=True,
    )
    print(f"model: {out / 'push' / 'model'} ({len(staged.files)} files, licence {staged.license})")
    print(f"dataset: {dataset.output} (README card with configs, parquet, manifest)")
    timings["stage"] = time.perf_counter() - t

    t = _step("7/7 from_pretrained the staged model and ask about a test image")
    model, processor = load(str(out / "push" / "model"), device="cpu")
    from datasets import load_dataset

    test = load_dataset(str(dataset.output), "classification", split="test")
    row = next(r for r in test if r["source"] == "crc")
    question = next(p["text"] for p in row["messages"][0]["content"] if p["type"] == "text")
    reply = answer(model, processor, row["images"][0], question)
    print(f"image: {row['id']}\nquestion: {question}\nanswer: {reply}\nreference: {row['label']}")
    timings["chat"] = time.perf_counter() - t

    crc_base = _headline(base_results, "crc", "macro", "f1")
    crc_tuned = _headline(tuned_results, "crc", "macro", "f1")
    summary = {
        "output": str(out), "parameters": n_params, "train_config": settings.train_config,
        "max_steps": settings.max_steps, "crc_macro_f1": {"base": crc_base, "tuned": crc_tuned},
        "crc_f1_goal": CRC_F1_GOAL, "goal_met": crc_tuned >= CRC_F1_GOAL, "answer": reply,
        "reference": row["label"], "seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 1), "compare_png": str(png),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "README.md").write_text(_readme(summary, markdown))
    print(f"\nCRC macro-F1: base {crc_base:.3f} → fine-tuned {crc_tuned:.3f} (goal ≥ {CRC_F1_GOAL}: "
          f"{'met' if summary['goal_met'] else 'NOT met'}); total {summary['total_seconds']:.0f} s; outputs in {out}")
    return summary


def _readme(summary: dict[str, Any], table: str) -> str:
    return f"""# PathInsight demo output (synthetic data)

| folder | what |
|---|---|
| `raw/` | synthetic raw sources in their native formats (`pathinsight data sample`) |
| `pathenhanceds/` | the built dataset (card, parquet, manifest); push-ready: `pathinsight push dataset pathenhanceds --repo-id {DEMO_DATASET_ID}` |
| `models/base/` | the tiny randomly initialised LLaVA-architecture model ({summary['parameters']:,} parameters) |
| `runs/tuned/` | the training run: weights, processor, resolved recipe, `metrics.jsonl`, `loss.png` |
| `eval/base/`, `eval/tuned/` | `results.json`, `predictions/*.jsonl`, `report.md` |
| `compare/` | `compare.md` and `compare.png`: the paper's Table 2 shape, with 95% bootstrap CIs |
| `push/model/` | push-ready model folder: card, `.eval_results/`, safetensors; `pathinsight push model` uploads the same files |

Trained on the `{summary['train_config']}` config for {summary['max_steps']} steps.
CRC macro-F1: base {summary['crc_macro_f1']['base']:.3f} → fine-tuned {summary['crc_macro_f1']['tuned']:.3f}.

{table}

Everything here is synthetic and not for clinical use.
"""
