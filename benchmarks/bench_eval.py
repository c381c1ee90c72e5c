"""P3 evaluation benchmark: items/s of the batched `pathinsight eval` runner vs a per-item `generate` loop,
same tiny model, same items, same CPU, one run; the predictions must be identical.

    PYTHONPATH=. python benchmarks/bench_eval.py [--batch-sizes 16 64] [--threads 1] [--hidden-size 32]

- data: `pathenhanceds.sample.write_sample(seed=0)` with a larger test split (CRC 180, PCam 80,
  bladder captions 45 items), built with `pathenhanceds.build`; tasks crc + pcam + captioning
  (greedy, 32 / 24 / 160 new tokens).
- model: `save_tiny_model("llava", ...)` (test-default size unless `--hidden-size` / `--num-layers`),
  weight matrices re-drawn with std 0.1 (seeded) so the answers depend on the input: at the default
  init a tiny random model says the same thing whatever it sees, and identical predictions would
  prove nothing. The number of distinct answers is printed.
- per-item loop: for each item, render its chat prompt, `processor(text, images)`, `model.generate`,
  decode: what one writes without batching.
- runner: `run_evaluation(...)` (the code behind `pathinsight eval`) at each `--batch-sizes` value;
  items/s from its per-task `generation_seconds`, predictions read back from `predictions/*.jsonl`.
Exit status 1 if any runner prediction differs from the per-item loop's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TASKS = ("crc", "pcam", "captioning")


def make_data(work: Path) -> Path:
    from pathenhanceds import build
    from pathenhanceds.sample import SampleSizes, write_sample

    sizes = SampleSizes(crc_val_per_class=20, pcam_test=80, bladder_test=20)
    sources = write_sample(work / "raw", seed=0, sizes=sizes)
    return build(sources, work / "pathenhanceds", seed=0).output


def make_model(work: Path, spec: dict[str, int]) -> Path:
    from transformers import AutoModelForImageTextToText

    from pathinsight_models.tiny import save_tiny_model, spread_weights

    out = save_tiny_model("llava", work / "tiny-llava", seed=0, **spec)
    spread_weights(AutoModelForImageTextToText.from_pretrained(out), seed=0).save_pretrained(out)
    return out


def per_item_loop(model: Any, processor: Any, items: list[dict[str, Any]], max_new_tokens: int) -> list[str]:
    from pathinsight_models.evaluation.generation import greedy_config

    tokenizer = processor.tokenizer
    gen = greedy_config(model, max_new_tokens, tokenizer.pad_token_id)
    answers = []
    with torch.inference_mode():
        for item in items:
            messages = [{"role": m["role"], "content": [{k: v for k, v in part.items() if v is not None}
                                                        for part in m["content"]]} for m in item["messages"]]
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            image = item["image"]() if callable(item["image"]) else item["image"]
            images = [[image.convert("RGB")]] if image is not None else None
            inputs = processor(text=[text], images=images, return_tensors="pt")
            out = model.generate(**inputs, generation_config=gen)
            answers.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64],
                        help="runner batch sizes to measure (16 is the runner's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (2 shared cores: 1)")
    parser.add_argument("--hidden-size", type=int, default=32, help="tiny LLaMA width (test default 32)")
    parser.add_argument("--num-layers", type=int, default=1, help="tiny LLaMA depth (test default 1)")
    parser.add_argument("--keep", type=Path, help="keep the work folder here (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pathinsight_models.evaluation.runner import build_items, run_evaluation
    from pathinsight_models.evaluation.tasks import get_task

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        data = make_data(work)
        spec = {"hidden_size": args.hidden_size, "num_layers": args.num_layers,
                "intermediate_size": 2 * args.hidden_size}
        model_dir = make_model(work, spec)
        model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
        processor = AutoProcessor.from_pretrained(model_dir)

        loop: dict[str, list[str]] = {}
        loop_seconds = 0.0
        for name in TASKS:
            task = get_task(name)
            items, _ = build_items(task, data=str(data), split="test")
            start = time.perf_counter()
            loop[name] = per_item_loop(model, processor, items, task.max_new_tokens)
            loop_seconds += time.perf_counter() - start
        n = sum(len(v) for v in loop.values())

        rows = [("per-item generate loop", loop_seconds, True)]
        for bs in args.batch_sizes:
            out = work / f"runner-bs{bs}"
            results = run_evaluation(str(model_dir), str(data), TASKS, output=out, batch_size=bs, n_resamples=0,
                                     progress=False)
            seconds = sum(results["tasks"][t]["generation_seconds"] for t in TASKS)
            same = all([json.loads(line)["prediction"] for line in
                        (out / "predictions" / f"{t}.jsonl").read_text(encoding="utf-8").splitlines()] == loop[t]
                       for t in TASKS)
            rows.append((f"runner, batch size {bs}", seconds, same))

        print(f"tiny llava {spec} (weights std 0.1); torch threads {torch.get_num_threads()}; "
              f"{n} items: " + ", ".join(f"{t} {len(loop[t])}" for t in TASKS))
        print("distinct answers: " + ", ".join(f"{t} {len(set(loop[t]))}/{len(loop[t])}" for t in TASKS))
        print(f"{'generation':<26}{'seconds':>9}{'items/s':>9}{'speed-up':>10}  identical predictions")
        for name, seconds, same in rows:
            print(f"{name:<26}{seconds:>9.2f}{n / seconds:>9.1f}{loop_seconds / seconds:>9.2f}x  {same}")
        best = max(loop_seconds / s for _, s, _ in rows[1:])
        ok = all(same for _, _, same in rows)
        print(f"speed-up vs per-item loop: {loop_seconds / rows[1][1]:.2f}x at the default batch size, "
              f"{best:.2f}x best (goal >= 6x); predictions identical: {ok}")
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
