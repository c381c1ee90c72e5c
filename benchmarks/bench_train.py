"""P2 training benchmark: effective (non-padding) tokens/s of `pathinsight_models.training.train` vs the
stock TRL `SFTTrainer` VLM recipe, same tiny model, same data, same CPU, same batch size and steps, one run.

    PYTHONPATH=. python benchmarks/bench_train.py [--steps N] [--batch-size 8] [--threads 1] [--repeats 2]

- data: `pathenhanceds.sample.write_sample(seed=0)` with every record count x `--scale` (default 4:
  1739 `all` train rows after dedup; CRC/PCam classification, captions, PathVQA, LLaVA-Med
  conversations, so lengths vary), built with `pathenhanceds.build`. From 1600 rows on (batch size 8)
  the length-grouped sampler uses its full 50-batch mega-batches, as it does on any real-size dataset.
- model: `save_tiny_model("llava", ...)`, larger than the test default (`--hidden-size 128`, 2 layers).
- stock: `SFTTrainer(model, args=SFTConfig(...), train_dataset=ds, processing_class=processor)`, i.e.
  TRL 1.16's default vision collator and random batches. Only the settings both runs must share are
  set: batch size, steps, seed, learning rate, logging, fp32 on CPU (no bf16 autocast, no activation
  checkpointing: our CPU defaults), no checkpoints, no reporting.
- ours: `train({...})` with `method: full` (all components tuned, as the stock run) and its defaults
  (length-grouped batches, pre-tokenized examples and cached images, loss on assistant tokens only).
- length: one epoch by default, so both trainers see every row once (same effective tokens);
  `--steps N` runs N steps, over different rows (random vs length-grouped order).
- measured: wall time of the training loop (`on_train_begin` -> `on_train_end`) and every batch's
  attention mask; effective tokens = mask sum, padding = 1 - sum / numel. "total s" adds the set-up
  (loading; for ours also tokenizing every example once). Runs alternate; the best of `--repeats` counts.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback


class Meter(TrainerCallback):
    """Times the training loop and counts the tokens of every batch the loop consumes.

    Wraps the train dataloader's `collate_fn` at `on_train_begin` (before the loop creates its
    iterator), so both trainers are measured by the same code.
    """

    def __init__(self) -> None:
        self.tokens = 0
        self.slots = 0
        self.batches = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        loader = getattr(train_dataloader, "base_dataloader", train_dataloader)  # accelerate's wrapper
        inner = loader.collate_fn

        def counting(examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = inner(examples)
            mask = batch["attention_mask"]
            self.tokens += int(mask.sum())
            self.slots += mask.numel()
            self.batches += 1
            return batch

        loader.collate_fn = counting
        self._start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self._start

    @property
    def padding(self) -> float:
        return 1 - self.tokens / self.slots if self.slots else float("nan")

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def make_data(work: Path, scale: int) -> Path:
    """The synthetic sample with every record count multiplied by `scale` (1: 440 `all` train rows)."""
    import dataclasses

    from pathenhanceds import build
    from pathenhanceds.sample import SampleSizes, write_sample

    base = SampleSizes()
    sizes = SampleSizes(**{f.name: (tuple(v * scale for v in value) if isinstance(value, tuple) else value * scale)
                           for f in dataclasses.fields(SampleSizes) for value in [getattr(base, f.name)]})
    sources = write_sample(work / "raw", seed=0, sizes=sizes)
    return build(sources, work / "pathenhanceds", seed=0).output


COMMON = {"report_to": "none", "save_strategy": "no", "logging_steps": 10, "seed": 0, "learning_rate": 2e-5,
          "bf16": False, "dataloader_num_workers": 0, "use_cpu": True}


def _length(steps: int | None) -> dict[str, Any]:
    return {"max_steps": steps} if steps else {"num_train_epochs": 1}


def run_stock(model_dir: Path, data: Path, out: Path, batch_size: int, steps: int | None) -> tuple[Meter, float]:
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    start = time.perf_counter()
    dataset = datasets.load_dataset(str(data), "all", split="train")
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    config = SFTConfig(output_dir=str(out), per_device_train_batch_size=batch_size, activation_checkpointing=False,
                       **_length(steps), **COMMON)
    meter = Meter()
    trainer = SFTTrainer(model, args=config, train_dataset=dataset, processing_class=processor, callbacks=[meter])
    trainer.train()
    return meter, time.perf_counter() - start


def run_ours(model_dir: Path, data: Path, out: Path, batch_size: int, steps: int | None,
             extra: dict | None = None) -> tuple[Meter, float]:
    from pathinsight_models.training import train

    start = time.perf_counter()
    meter = Meter()
    train({"model_name_or_path": str(model_dir), "dataset_name": str(data), "output_dir": str(out),
           "method": "full", "per_device_train_batch_size": batch_size, **_length(steps), **COMMON,
           **(extra or {})},
          callbacks=[meter])
    return meter, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps (default: one epoch, so both trainers see every example once)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (2 shared cores: 1)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per trainer, alternating; the best is reported")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--scale", type=int, default=4,
                        help="sample size multiplier (4: 1760 rows; from 1600 rows on, batch size 8, the "
                             "length-grouped sampler uses its full 50-batch mega-batches, as on any real dataset)")
    parser.add_argument("--keep", type=Path, help="keep the work folder here (default: a temporary one)")
    parser.add_argument("--exact-length-grouping", action="store_true",
                        help="ours with `answer_bucket_tokens: 1` (group by exact total length; see README)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pathinsight_models.tiny import save_tiny_model

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        data = make_data(work, args.scale)
        import datasets

        data_rows = len(datasets.load_dataset(str(data), "all", split="train"))
        spec = {"hidden_size": args.hidden_size, "num_layers": args.num_layers, "num_heads": 4,
                "intermediate_size": 4 * args.hidden_size, "vision_hidden_size": 64, "vision_layers": 2,
                "vision_intermediate_size": 128, "image_size": args.image_size, "patch_size": 8}
        model_dir = save_tiny_model("llava", work / "tiny-llava", seed=0, **spec)
        runs: dict[str, list[tuple[Meter, float]]] = {"stock": [], "ours": []}
        for r in range(args.repeats):  # alternate, so load from other processes hits both alike
            runs["stock"].append(run_stock(model_dir, data, work / f"stock{r}", args.batch_size, args.steps))
            runs["ours"].append(run_ours(model_dir, data, work / f"ours{r}", args.batch_size, args.steps,
                                         {"answer_bucket_tokens": 1} if args.exact_length_grouping else None))
        for name, results in runs.items():
            print(f"{name} eff tok/s per repeat: " + ", ".join(f"{m.rate:.0f}" for m, _ in results))
        stock, stock_total = max(runs["stock"], key=lambda x: x[0].rate)
        ours, ours_total = max(runs["ours"], key=lambda x: x[0].rate)
        print(f"tiny llava {spec}; torch threads {torch.get_num_threads()}; batch size {args.batch_size}; "
              f"{'one epoch' if args.steps is None else f'{args.steps} steps'} of {data_rows} rows; "
              f"best of {args.repeats}; ours: {'exact length grouping' if args.exact_length_grouping else 'default recipe'}")
        print(f"{'trainer':<26}{'steps':>6}{'loop s':>9}{'eff tok':>9}{'eff tok/s':>11}{'padding':>9}{'total s':>9}")
        for name, m, total in (("stock TRL SFTTrainer", stock, stock_total), ("pathinsight train", ours, ours_total)):
            print(f"{name:<26}{m.batches:>6d}{m.seconds:>9.2f}{m.tokens:>9d}{m.rate:>11.0f}{m.padding:>9.1%}"
                  f"{total:>9.2f}")
        print(f"effective tokens/s ratio: {ours.rate / stock.rate:.2f}x (goal >= 1.5x); "
              f"padding {ours.padding:.1%} vs {stock.padding:.1%} (goal <= 10%)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
