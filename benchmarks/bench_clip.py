"""CLIP zero-shot benchmark: images/s of `pathinsight clip eval`'s zero-shot path vs clip_benchmark's, on the
same tiny open_clip model, the same images and the same prompts, one CPU thread; predictions must match.

    PYTHONPATH=. python benchmarks/bench_clip.py [--per-class 100] [--batch-size 64] [--threads 1] [--repeats 2]

- data: `pathenhanceds.sample.write_sample(seed=0)` with `--per-class` CRC test images per class (default
  100, 900 images), built with `pathenhanceds.build`; the CRC rows of the classification test split,
  decoded once into memory for both sides (loading is not timed).
- model: a random tiny open_clip ViT (custom config: 2+2 layers, width 64, 32 px, QuickGELU) saved in
  open_clip's hub layout and loaded by both with open_clip's factory and eval transform.
- prompts: the shipped `crc100k` set (9 classes, 41 CONCH synonyms x 22 templates = 902 texts); clip_benchmark
  gets them as its class-specific prompt dict (`templates[classname] = [...]`), so both encode the same texts.
- clip_benchmark: `zero_shot_classifier` + `run_classification` over a `DataLoader` (batch `--batch-size`,
  no workers) + `balanced_accuracy_score`, i.e. its `evaluate` without the final `accuracy()` (which numpy 2
  rejects in clip_benchmark 1.6.2).
- ours: `zero_shot_classifier` + `embed_images` + `zero_shot_logits` + `classification_scores` (accuracy,
  balanced accuracy, weighted F1, per-class table, no bootstrap) from `pathinsight_models.clip`.
Prints both rates and ours/clip_benchmark; exit status 1 if any prediction differs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

CFG = {"embed_dim": 32, "quick_gelu": True,
       "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
       "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def make_data(work: Path, per_class: int) -> Path:
    from pathenhanceds import build
    from pathenhanceds.sample import SampleSizes, write_sample

    sources = write_sample(work / "raw", seed=0, sizes=SampleSizes(crc_val_per_class=per_class))
    return build(sources, work / "pathenhanceds", seed=0).output


def make_model(work: Path) -> Path:
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = CLIP(**CFG)
    out = work / "tiny-open-clip"
    out.mkdir(parents=True)
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": CFG}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="alternate runs, keep each side's best")
    parser.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from clip_benchmark.metrics import zeroshot_classification as cb
    from sklearn.metrics import balanced_accuracy_score
    from torch.utils.data import DataLoader

    from pathinsight_models.clip.evaluate import classification_scores, task_rows
    from pathinsight_models.clip.zeroshot import (
        embed_images,
        get_prompt_set,
        load_encoder,
        zero_shot_classifier,
        zero_shot_logits,
    )

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-clip-"))
    try:
        data = make_data(work, args.per_class)
        encoder = load_encoder(make_model(work))
        prompts = get_prompt_set("crc100k")
        images, refs, ids = task_rows(str(data), prompts, "test")
        images = [im.convert("RGB") for im in images]
        labels = prompts.labels
        targets = [labels.index(r) for r in refs]
        n = len(images)

        class Images(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return n

            def __getitem__(self, i: int):
                return encoder.preprocess(images[i]), targets[i]

        def theirs() -> list[int]:
            texts = {label: prompts.texts(label) for label in labels}
            classifier = cb.zero_shot_classifier(encoder.model, encoder.tokenizer, labels, texts, "cpu", amp=False)
            logits, target = cb.run_classification(encoder.model, classifier,
                                                    DataLoader(Images(), batch_size=args.batch_size), "cpu",
                                                    amp=False)
            pred = logits.argmax(axis=1)
            balanced_accuracy_score(target, pred)
            return pred.tolist()

        def ours() -> list[int]:
            logits = zero_shot_logits(embed_images(encoder, images, args.batch_size),
                                      zero_shot_classifier(encoder, prompts))
            pred = logits.argmax(dim=1).tolist()
            classification_scores([labels[i] for i in pred], refs, labels, ids, n_resamples=0,
                                  logits=logits.numpy())
            return pred

        best = {"clip_benchmark": float("inf"), "pathinsight": float("inf")}
        preds = {}
        for _ in range(args.repeats):
            for name, fn in (("clip_benchmark", theirs), ("pathinsight", ours)):
                start = time.perf_counter()
                preds[name] = fn()
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"\nzero-shot crc100k, {n} images, {sum(len(prompts.texts(c)) for c in labels)} prompt texts, "
              f"batch {args.batch_size}, {args.threads} thread(s), best of {args.repeats}")
        print(f"{'pipeline':<16}{'seconds':>10}{'images/s':>12}")
        for name, seconds in best.items():
            print(f"{name:<16}{seconds:>10.2f}{n / seconds:>12.1f}")
        print(f"ratio pathinsight / clip_benchmark (images/s): {best['clip_benchmark'] / best['pathinsight']:.2f}")
        same = preds["clip_benchmark"] == preds["pathinsight"]
        print(f"identical predictions: {same}")
        return 0 if same else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
