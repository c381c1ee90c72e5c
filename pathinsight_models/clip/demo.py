"""`pathinsight demo --clip`: the CLIP track offline, in minutes, on the shipped synthetic sample.

sample -> build PathEnhanceDS -> tiny random `CLIPModel` -> zero-shot CRC balanced accuracy -> contrastive
training on captions + class captions -> zero-shot again -> LLaVA assembled on the trained tower with a
tiny Llama -> stage-1 projector alignment -> the assembled model answers one question about a test image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run_clip_demo(output: str | Path, seed: int = 0, steps: int = 150, stage1_steps: int = 20) -> dict[str, Any]:
    """Run every stage into `output`; returns a summary (also written to OUTPUT/clip_demo.json)."""
    import shutil

    import torch

    from pathenhanceds.atomic import check_output, write_marker
    from pathenhanceds.build import build
    from pathenhanceds.sample import write_sample
    from pathinsight_models.chat import answer, load
    from pathinsight_models.clip.assemble import assemble_llava
    from pathinsight_models.clip.evaluate import evaluate_clip
    from pathinsight_models.clip.tiny import save_tiny_clip, save_tiny_lm
    from pathinsight_models.clip.train import train_clip
    from pathinsight_models.training import train

    # Replaces only an earlier demo folder (its marker is written first, so a crashed demo reruns too);
    # never a folder of the user's, the current directory, the home folder or `/`.
    out = check_output(output, overwrite=True, kind="demo")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_marker(out, "demo", demo="clip")
    summary: dict[str, Any] = {"seed": seed, "steps": steps}

    t = _step("1/6 synthetic sample -> PathEnhanceDS")
    data = out / "PathEnhanceDS"
    build(write_sample(out / "raw", seed=seed), data, seed=seed)
    summary["seconds_data"] = round(time.perf_counter() - t, 1)

    def crc(model: Path, name: str) -> float:
        res = evaluate_clip(model, data, ["crc100k"], out / name, n_resamples=200, seed=seed)
        return float(res["tasks"]["crc100k"]["zero_shot"]["balanced_accuracy"])

    _step("2/6 tiny random CLIPModel: zero-shot CRC")
    base = save_tiny_clip("clip", out / "tiny-clip", seed=seed)
    summary["crc_balanced_accuracy_before"] = crc(base, "eval-before")
    print(f"zero-shot CRC balanced accuracy (random init): {summary['crc_balanced_accuracy_before']:.3f}")

    t = _step(f"3/6 contrastive training ({steps} steps, captions + class captions)")
    trained = train_clip(model_name_or_path=str(base), dataset_name=str(data), dataset_config="captioning",
                         class_captions=True, output_dir=str(out / "pathclip"), max_steps=steps,
                         per_device_train_batch_size=32, learning_rate=1e-3, warmup_steps=0,
                         lr_scheduler_type="constant", logging_steps=10, save_strategy="no", seed=seed)
    summary["seconds_train"] = round(time.perf_counter() - t, 1)

    _step("4/6 trained CLIP: zero-shot CRC")
    summary["crc_balanced_accuracy_after"] = crc(trained, "eval-after")
    print(f"zero-shot CRC balanced accuracy: {summary['crc_balanced_accuracy_before']:.3f} -> "
          f"{summary['crc_balanced_accuracy_after']:.3f}")

    _step("5/6 LLaVA assembled on the trained tower + tiny Llama, stage-1 alignment")
    vlm = assemble_llava(trained, save_tiny_lm(out / "tiny-lm", seed=seed), out / "pathclip-llava", seed=seed)
    stage1 = train({"model_name_or_path": str(vlm), "dataset_name": str(data), "dataset_config": "captioning",
                    "output_dir": str(out / "pathclip-llava-stage1"), "method": "full", "stage": "align",
                    "max_steps": stage1_steps, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
                    "logging_steps": 5, "save_strategy": "no", "max_length": 256, "seed": seed,
                    "dataset_test_split": None})

    _step("6/6 the assembled model answers one question")
    import datasets

    row = datasets.load_dataset(str(data), "classification", split="test")[0]
    model, processor = load(str(stage1))
    torch.manual_seed(seed)
    question = "Describe the histopathology image."
    reply = answer(model, processor, row["images"][0], question, max_new_tokens=16)
    print(f"Q: {question}\nA: {reply}")
    summary.update({"question": question, "answer": reply, "vlm": str(stage1), "clip": str(trained)})
    (out / "clip_demo.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
