"""`pathinsight demo --downstream`: the "fine-tune on your own data" flow, offline, on synthetic data.

sample → build PathEnhanceDS → tiny LLaVA-architecture model → LoRA run on the sample (the stand-in
for a published PathInsight adapter) → a lab's own ImageFolder with NEW class names (seeded textures)
→ `pathinsight data import` → evaluate the adapter on the lab's test split (generic `classification`
task) → continue the SAME adapter on the lab's training split → evaluate again: macro-F1 rises.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The lab's classes: names the sample never uses, each drawn with a distinct synthetic texture style.
LAB_CLASSES = {"fibrin": "tumour", "haemorrhage": "MUS", "keratin": "grade3", "lymphoid": "LYM"}


@dataclass
class DownstreamSettings:
    """Knobs of `run_downstream_demo` (the `pathinsight demo --downstream` flags)."""

    output: Path = Path("demo_downstream_output")
    seed: int = 0
    pretrain_steps: int = 150  # LoRA on the sample: the "published" adapter
    max_steps: int = 300  # continuing it on the lab's data
    images_per_class: int = 40
    batch_size: int = 8
    learning_rate: float = 2e-3


def write_lab_imagefolder(root: Path, images_per_class: int, seed: int, size: int = 32) -> Path:
    """`root/<class>/<n>.png` for `LAB_CLASSES`: seeded textures (pathenhanceds.sample.textures)."""
    import numpy as np
    from PIL import Image

    from pathenhanceds.sample.textures import texture

    for i, (name, style) in enumerate(sorted(LAB_CLASSES.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, i])
        for n in range(images_per_class):
            Image.fromarray(texture(style, size, rng)).save(folder / f"{name}_{n:03d}.png")
    return root


def run_downstream_demo(settings: DownstreamSettings) -> dict[str, Any]:
    """Run every stage; returns a summary (also written to OUTPUT/summary.json)."""
    from pathenhanceds.build import build
    from pathenhanceds.importing import import_dataset
    from pathenhanceds.sample import write_sample
    from pathinsight_models.demo import TINY_LLAVA, _headline, _step, fresh_output, training_arguments
    from pathinsight_models.evaluation.runner import run_evaluation
    from pathinsight_models.tiny import save_tiny_model
    from pathinsight_models.training import train

    out = fresh_output(settings.output, settings.seed)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    common = training_arguments(settings.batch_size, settings.learning_rate, settings.seed)

    t = _step("1/6 synthetic sample → PathEnhanceDS; tiny LLaVA-architecture model")
    dataset = build(write_sample(out / "raw", seed=settings.seed), out / "pathenhanceds", seed=settings.seed)
    base = save_tiny_model("llava", out / "models" / "base", seed=settings.seed, **TINY_LLAVA)
    timings["sample+build+model"] = time.perf_counter() - t

    t = _step(f"2/6 LoRA on the sample's classification config ({settings.pretrain_steps} steps): "
              "the stand-in for a published adapter")
    adapter = train({"model_name_or_path": str(base), "dataset_name": str(dataset.output),
                     "dataset_config": "classification", "output_dir": str(out / "runs" / "adapter"),
                     "method": "lora", "lora_r": 16, "lora_alpha": 32, "max_steps": settings.pretrain_steps,
                     **common})
    timings["pretrain"] = time.perf_counter() - t

    t = _step(f"3/6 the lab's own ImageFolder with new classes ({', '.join(sorted(LAB_CLASSES))}) → import")
    folder = write_lab_imagefolder(out / "lab_images", settings.images_per_class, settings.seed)
    lab = import_dataset(folder, out / "lab_dataset", format="imagefolder", task="classification",
                         seed=settings.seed, license="cc-by-4.0", name="demo_lab")
    timings["import"] = time.perf_counter() - t

    eval_kwargs = {"data": str(lab.output), "tasks": ["classification"], "split": "test", "seed": settings.seed}
    t = _step("4/6 evaluate the adapter on the lab's test split (generic classification task)")
    before = run_evaluation(str(adapter), output=out / "eval" / "before", **eval_kwargs)
    timings["eval before"] = time.perf_counter() - t

    t = _step(f"5/6 continue the same adapter on the lab's training split ({settings.max_steps} steps)")
    continued = train({"model_name_or_path": str(adapter), "dataset_name": str(lab.output),
                       "dataset_config": "classification", "output_dir": str(out / "runs" / "continued"),
                       "max_steps": settings.max_steps, **common})
    timings["continue"] = time.perf_counter() - t

    t = _step("6/6 evaluate the continued adapter")
    after = run_evaluation(str(continued), output=out / "eval" / "after", **eval_kwargs)
    timings["eval after"] = time.perf_counter() - t

    f1_before = _headline(before, "classification", "macro", "f1")
    f1_after = _headline(after, "classification", "macro", "f1")
    summary = {
        "output": str(out), "classes": sorted(LAB_CLASSES), "adapter": str(adapter),
        "continued": str(continued), "macro_f1": {"before": f1_before, "after": f1_after},
        "improved": f1_after > f1_before,
        "lineage": json.loads((continued / "run_info.json").read_text())["lineage"],
        "commands": [
            f"pathinsight data import --format imagefolder --input {folder} --output {lab.output} "
            "--task classification --license cc-by-4.0",
            f"pathinsight train --model_name_or_path {adapter} --dataset_name {lab.output} "
            f"--dataset_config classification --output_dir {continued} --max_steps {settings.max_steps}",
            f"pathinsight eval --model {continued} --data {lab.output} --tasks classification",
        ],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nlab classes macro-F1: adapter {f1_before:.3f} → continued {f1_after:.3f} "
          f"({'rose' if summary['improved'] else 'did NOT rise'}); total {summary['total_seconds']:.0f} s; "
          f"outputs in {out}")
    return summary
