"""`run_knowledge_demo`: the knowledge track end to end, offline, in minutes on CPU.

synthetic H&E-like patches of three classes → PathEnhanceDS-layout classification dataset →
`build_knowledge` (cell graphs, GNN, IG, tables, template Q&A, retrieval indexes) → a tiny LLaVA
trained with `recipes/knowledge_stage1.yaml` then `recipes/knowledge_stage2.yaml` → the stage-2
model answers the explanation question on test images, scored for diagnosis and grounding.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
KNOWLEDGE_DEMO_OUTPUT = Path("demo_knowledge_output")  # `pathinsight demo --knowledge` without --output
# Tiny random models need a far larger step size than the 7B recipes, and stage 2 trains them fully (LoRA
# on a 32-wide random model barely moves the loss: 6.2 → 5.8 in 300 steps, full 5.9 → 0.36); the rest
# is the recipes'.
DEMO_OVERRIDES = {"learning_rate": 2e-3, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                  "bf16": False, "activation_checkpointing": False, "eval_strategy": "no", "save_strategy": "no",
                  "logging_steps": 10, "max_length": 512, "warmup_steps": 0.0, "report_to": "none"}


def _print(text: str) -> None:
    print(text, flush=True)


def run_knowledge_demo(output: str | Path, *, per_class: int = 24, steps: tuple[int, int] = (100, 400),
                       eval_limit: int = 36, seed: int = 0, image_size: int = 32,
                       progress: bool = True) -> dict[str, Any]:
    """Run the demo into `output` (cells/, K/, models/, runs/, summary.json, README.md); returns the summary.

    `image_size` is the tiny VLM's input size (patches are 128 px; at 32 px a normal nucleus is ~2 px).
    `output` is replaced only when it is an earlier demo folder (kind `demo`; its marker is written
    first, so a crashed demo reruns too), never a folder of the user's, the current directory, the
    home folder or `/`.
    """
    import torch

    from pathenhanceds.atomic import check_output, write_marker
    from pathinsight_models.evaluation.generation import generate
    from pathinsight_models.loading import load_for_inference
    from pathinsight_models.tiny import save_tiny_model
    from pathinsight_models.training import train

    from .build import build_knowledge
    from .explain_eval import score_explanations
    from .synthetic import write_synthetic_dataset
    from .tables import read_tables
    from .teacher import STAGE2_QUESTIONS, template_qa

    output = check_output(output, overwrite=True, kind="demo")
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    write_marker(output, "demo", demo="knowledge")
    timings: dict[str, float] = {}
    t = time.time()
    _print("[1/5] synthetic H&E-like patches (normal / inflammation / tumor) → classification dataset")
    data = write_synthetic_dataset(output / "cells", per_class, seed=seed)
    timings["data_s"] = time.time() - t

    t = time.time()
    _print("[2/5] knowledge build: cell graphs → GNN → integrated gradients → tables → template Q&A")
    result = build_knowledge(data, output / "K", seed=seed, overwrite=True, progress=progress)
    timings["knowledge_s"] = time.time() - t
    gnn = result.manifest["gnn"]
    _print(f"      GNN test balanced accuracy {gnn['test']['balanced_accuracy']:.3f}; logistic regression on graph "
           f"statistics {gnn['baseline_test']['balanced_accuracy']:.3f}")
    _print("      nearest-neighbour label hit rate: " + ", ".join(
        f"{k} {v['hit_rate']:.3f}" for k, v in result.manifest["retrieval"].items()))
    tables = read_tables(result.output / "tables" / "test.parquet")
    example = tables[0]
    qa = template_qa(example)
    _print("      example table: " + json.dumps({k: example[k] for k in ("id", "label", "predicted", "node_density")})
           + f"\n      top node: {json.dumps(example['top_nodes'][0]) if example['top_nodes'] else '-'}")
    for role, text in qa.stage1 + qa.stage2:
        _print(f"      {role}: {text}")

    t = time.time()
    _print("[3/5] tiny LLaVA (random init, local tokenizer)")
    base = save_tiny_model("llava", output / "models" / "base", seed=seed, image_size=image_size)
    _print(f"[4/5] stage 1 ({steps[0]} steps, language model frozen) then stage 2 ({steps[1]} steps, end to end, full weights)")
    torch.manual_seed(seed)
    s1 = train(RECIPES / "knowledge_stage1.yaml", model_name_or_path=str(base), dataset_name=str(result.output),
               output_dir=str(output / "runs" / "stage1"), max_steps=steps[0], seed=seed, **DEMO_OVERRIDES)
    s2 = train(RECIPES / "knowledge_stage2.yaml", model_name_or_path=str(s1), dataset_name=str(result.output),
               output_dir=str(output / "runs" / "stage2"), max_steps=steps[1], seed=seed, method="full",
               **DEMO_OVERRIDES)
    timings["training_s"] = time.time() - t

    t = time.time()
    _print(f"[5/5] the stage-2 model explains {eval_limit} test images; diagnosis + grounding scores")
    from datasets import load_dataset

    test = load_dataset(str(result.output), "knowledge_stage2", split="test")
    by_id = {tb["id"]: tb for tb in tables}
    rows = list(test.select(range(min(eval_limit, len(test)))))
    items = [{"messages": [{"role": "user", "content": [{"type": "image", "text": None},
                                                        {"type": "text", "text": STAGE2_QUESTIONS[0]}]}],
              "image": row["images"][0]} for row in rows]
    model, processor, _ = load_for_inference(str(s2), device="cpu")
    answers = generate(model, processor, items, max_new_tokens=48, progress=progress, desc="explaining")
    scores = score_explanations(answers, [by_id[r["id"].split("#")[0]] for r in rows])
    timings["evaluation_s"] = time.time() - t
    _print(f"      diagnosis balanced accuracy {scores['balanced_accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}; "
           f"grounding coverage {scores['grounding_coverage']:.3f}, precision {scores['grounding_precision']:.3f}")
    _print(f"      e.g. {rows[0]['label']}: {answers[0]!r}")
    summary = {
        "gnn_balanced_accuracy": gnn["test"]["balanced_accuracy"],
        "baseline_balanced_accuracy": gnn["baseline_test"]["balanced_accuracy"],
        "chance_balanced_accuracy": 1 / len(gnn["classes"]),
        "retrieval_hit_rate": {k: v["hit_rate"] for k, v in result.manifest["retrieval"].items()},
        "example_table": example, "example_qa": {"stage1": qa.stage1, "stage2": qa.stage2},
        "vlm": {k: v for k, v in scores.items() if k != "diagnosis"}, "vlm_answers": answers,
        "steps": list(steps), "digest": result.digest, "timings": timings,
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (output / "README.md").write_text(
        "# Knowledge demo output\n\n"
        "| folder | what |\n|---|---|\n"
        "| `cells/` | synthetic classification dataset (PathEnhanceDS layout) |\n"
        "| `K/` | knowledge dataset: `knowledge_stage1`/`knowledge_stage2` configs, `gnn/`, `tables/`, `index/` |\n"
        "| `models/base/` | random-init tiny LLaVA |\n"
        "| `runs/stage1/`, `runs/stage2/` | the two training stages |\n"
        "| `summary.json` | GNN and baseline balanced accuracy, hit rates, example table and Q&A, VLM scores |\n")
    return summary
