"""`pathinsight clip eval`: zero-shot classification, image-text retrieval and a linear probe.

The three numbers CLIP papers report, on PathEnhanceDS splits:

- **Zero-shot** (`zeroshot.py` defines the classifier): accuracy, top-5 accuracy (5+ classes, as
  clip_benchmark), balanced accuracy (= macro recall, clip_benchmark's `mean_per_class_recall`),
  weighted F1 (per-class F1 weighted by support), macro P/R/F1, per-class table and confusion matrix
  PNG, all from the project's classification metric module; 95% percentile bootstrap CIs over images.
- **Retrieval** on a captioning split: image->text and text->image Recall@1/5/10, CLIP-paper
  definition (a query scores 1 if any of its positives is among the top k), cosine similarity.
- **Linear probe**: scikit-learn `LogisticRegression` (lbfgs, L2, max_iter 1000, seeded) on frozen,
  L2-normalised image embeddings. C is searched on the task's validation split over
  `PROBE_C_GRID` (10^-2 ... 10^4), picking the best balanced accuracy (ties: the smaller C); the
  classifier is then refit on train + validation with that C and scored on the evaluation split.

Results: `OUTPUT/results.json`, `OUTPUT/<task>_per_class.csv`, `OUTPUT/<task>_confusion.png`.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathenhanceds.errors import InputError

logger = logging.getLogger("pathinsight.clip")

RECALL_KS = (1, 5, 10)
PROBE_C_GRID = tuple(10.0 ** e for e in range(-2, 5))
RETRIEVAL = "retrieval"


# ------------------------------------------------------------------------------------------ metrics


def weighted_f1_from_confusion(cm: np.ndarray) -> float:
    """Support-weighted mean of per-class F1 (scikit-learn `average="weighted"`), from confusion counts."""
    from pathinsight_models.metrics.classification.classification import per_class_from_confusion

    per = per_class_from_confusion(cm)
    total = per["support"].sum()
    return float((per["f1"] * per["support"]).sum() / total) if total > 0 else float("nan")


def classification_scores(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str],
                          ids: Sequence[str], n_resamples: int = 1000, seed: int = 0,
                          logits: Any = None) -> dict[str, Any]:
    """Metrics of one classification run, with bootstrap CIs over images (see module docstring)."""
    from pathinsight_models.evaluation.bootstrap import Stat, bootstrap, cluster_index
    from pathinsight_models.metrics.classification.classification import (
        compute,
        confusion,
        encode,
        scores_from_confusion,
    )

    labels = list(labels)
    result = compute(list(predictions), list(references), labels)
    y_true, y_pred = encode(list(predictions), list(references), labels)
    k = len(labels)
    cm = confusion(y_true, y_pred, k)
    result["weighted_f1"] = weighted_f1_from_confusion(cm)
    if logits is not None and k >= 5:
        top5 = np.asarray(logits).argsort(axis=1)[:, ::-1][:, :5]
        result["top5_accuracy"] = float((top5 == y_true[:, None]).any(axis=1).mean())
    clusters, _ = cluster_index(list(ids))

    def from_cm(pick: str):
        def fn(w: np.ndarray) -> float:
            counts = confusion(y_true, y_pred, k, w)
            return weighted_f1_from_confusion(counts) if pick == "weighted_f1" else scores_from_confusion(counts)[pick]
        return fn

    stats = {name: Stat(fn=from_cm(name)) for name in ("accuracy", "balanced_accuracy", "weighted_f1", "macro_f1")}
    result["ci95"] = {name: (list(ci) if ci else None)
                      for name, ci in bootstrap(stats, clusters, n_resamples=n_resamples, seed=seed).items()}
    return result


def retrieval_recalls(image_embeddings: Any, text_embeddings: Any, text_image: Sequence[int],
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Image->text and text->image Recall@k (CLIP-paper definition, as clip_benchmark) for normalised
    embeddings; `text_image[j]` is the index of text j's image."""
    import torch

    scores = text_embeddings @ image_embeddings.T  # (texts, images)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(text_image)), torch.as_tensor(list(text_image))] = True
    out: dict[str, float] = {}
    for k in ks:
        for name, s, pos in (("text_to_image", scores, positive), ("image_to_text", scores.T, positive.T)):
            top = s.topk(min(k, s.shape[1]), dim=1).indices
            hit = pos.gather(1, top).any(dim=1)
            out[f"{name}_R@{k}"] = float(hit.float().mean())
    out["n_images"], out["n_texts"] = int(scores.shape[1]), int(scores.shape[0])
    return out


def linear_probe(train_x: np.ndarray, train_y: Sequence[str], val_x: np.ndarray, val_y: Sequence[str],
                 seed: int = 0, grid: Sequence[float] = PROBE_C_GRID) -> tuple[Any, dict[str, Any]]:
    """Fit the probe with the documented C search; returns (classifier, search report)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    def fit(x: np.ndarray, y: Sequence[str], c: float) -> Any:
        return LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x, list(y))

    search = []
    for c in grid:
        score = balanced_accuracy_score(list(val_y), fit(train_x, train_y, c).predict(val_x)) if len(val_y) else 0.0
        search.append({"C": c, "validation_balanced_accuracy": float(score)})
    best = max(search, key=lambda s: (s["validation_balanced_accuracy"], -s["C"]))["C"]
    x = np.concatenate([train_x, val_x]) if len(val_y) else train_x
    y = list(train_y) + list(val_y)
    return fit(x, y, best), {"C": best, "search": search, "n_train": len(train_y), "n_validation": len(val_y)}


# ------------------------------------------------------------------------------------------ data


def _load(data: str, config: str, split: str) -> Any:
    from pathinsight_models.clip.data import _load as load

    return load(data, config, split)


def task_rows(data: str, prompts: Any, split: str, limit: int | None = None) -> tuple[list[Any], list[str], list[str]]:
    """(images, labels, ids) of the task's rows: its config and source, labels known to the prompt set."""
    ds = _load(data, prompts.config, split)
    meta = ds.select_columns([c for c in ("id", "source", "label") if c in ds.column_names])
    keep = [i for i, row in enumerate(meta)
            if (prompts.source is None or row.get("source") == prompts.source) and row.get("label") in prompts.classes]
    if limit is not None:
        keep = keep[:limit]
    if not keep:
        raise InputError(f"no rows for task {prompts.name!r} (source {prompts.source!r}) in split {split!r}",
                         file=data, fix="check --data / --split, or the prompt set's `source` and class labels")
    rows = ds.select(keep)
    return [r[0] for r in rows["images"]], list(rows["label"]), list(rows["id"])


def _features(encoder: Any, images: list[Any], batch_size: int, desc: str) -> np.ndarray:
    from pathinsight_models.clip.zeroshot import embed_images

    return embed_images(encoder, images, batch_size, desc=desc).numpy()


# ------------------------------------------------------------------------------------------ runner


def evaluate_clip(
    model: str | Path,
    data: str | Path,
    tasks: Sequence[str],
    output: str | Path,
    *,
    split: str = "test",
    linear_probe_tasks: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a CLIP/SigLIP/open_clip model on `tasks` (prompt-set names or YAML paths, and `retrieval`);
    writes and returns the results (see module docstring). An existing non-empty `output` is replaced only
    with `overwrite` and only when it is an earlier `clip eval` output."""
    import matplotlib
    import torch

    from pathenhanceds.atomic import atomic_output_dir, marker_fields
    from pathinsight_models.clip.zeroshot import (
        get_prompt_set,
        load_encoder,
        local_inputs,
        zero_shot_classifier,
        zero_shot_logits,
    )

    if not tasks:
        raise InputError("no tasks given", fix="e.g. --tasks crc100k,pcam,retrieval")
    started = time.time()
    prompt_sets = {task: get_prompt_set(task) for task in tasks if task != RETRIEVAL}  # bad names fail first
    # Written beside `output` and swapped in at the end; --overwrite replaces only an earlier `clip eval`
    # output (its results.json carries the marker), never the model or the data.
    with atomic_output_dir(output, overwrite=overwrite, kind="clip-eval", protected=local_inputs(model, data)) as out:
        encoder = load_encoder(model)
        results: dict[str, Any] = {**marker_fields("clip-eval"), "model": str(model), "data": str(data),
                                   "split": split, "seed": seed, "limit": limit, "encoder": encoder.kind,
                                   "tasks": {}}
        data = str(data)
        for task in tasks:
            if task == RETRIEVAL:
                results["tasks"][task] = _retrieval(encoder, data, split, limit, batch_size)
                continue
            prompts = prompt_sets[task]
            images, refs, ids = task_rows(data, prompts, split, limit)
            feats = _features(encoder, images, batch_size, f"{prompts.name} {split}")
            logits = zero_shot_logits(torch.from_numpy(feats), zero_shot_classifier(encoder, prompts)).numpy()
            preds = [prompts.labels[i] for i in logits.argmax(axis=1)]
            scores = classification_scores(preds, refs, prompts.labels, ids, n_resamples, seed, logits)
            entry: dict[str, Any] = {"prompt_set": prompts.name, "n_templates": len(prompts.templates),
                                     "n_synonyms": {k: len(v) for k, v in prompts.classes.items()},
                                     "zero_shot": scores}
            _per_class_csv(out / f"{prompts.name}_per_class.csv", scores)
            matplotlib.use("Agg")
            _confusion_png(out / f"{prompts.name}_confusion.png", scores, f"{prompts.name} zero-shot ({split})")
            if linear_probe_tasks:
                entry["linear_probe"] = _probe(encoder, data, prompts, split, feats, refs, ids, n_resamples, seed,
                                               batch_size, limit)
            results["tasks"][prompts.name] = entry
        results["seconds"] = round(time.time() - started, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


def _retrieval(encoder: Any, data: str, split: str, limit: int | None, batch_size: int) -> dict[str, Any]:
    from pathinsight_models.clip.data import caption_of
    from pathinsight_models.clip.zeroshot import embed_texts

    ds = _load(data, "captioning", split)
    meta = ds.select_columns(["messages"])
    keep, texts = [], []
    for i, row in enumerate(meta):
        text = caption_of(row)
        if text:
            keep.append(i)
            texts.append(text)
    if limit is not None:
        keep, texts = keep[:limit], texts[:limit]
    if not keep:
        raise InputError(f"no captions in split {split!r}", file=data, fix="use a dataset with captioning rows")
    import torch

    images = [r[0] for r in ds.select(keep)["images"]]
    image_emb = torch.from_numpy(_features(encoder, images, batch_size, f"retrieval {split}"))
    # One caption per row here; each row's image is its own retrieval target.
    return retrieval_recalls(image_emb, embed_texts(encoder, texts), list(range(len(texts))))


def _probe(encoder: Any, data: str, prompts: Any, split: str, test_x: np.ndarray, test_y: list[str],
           test_ids: list[str], n_resamples: int, seed: int, batch_size: int, limit: int | None) -> dict[str, Any]:
    if split in ("train", "validation"):
        raise InputError("the linear probe fits on train and validation", fix="evaluate on --split test")
    train_images, train_y, _ = task_rows(data, prompts, "train", None)
    try:
        val_images, val_y, _ = task_rows(data, prompts, "validation", None)
    except InputError:
        val_images, val_y = [], []
    train_x = _features(encoder, train_images, batch_size, f"{prompts.name} train")
    val_x = _features(encoder, val_images, batch_size, f"{prompts.name} validation") if val_images else \
        np.zeros((0, train_x.shape[1]), dtype=train_x.dtype)
    clf, report = linear_probe(train_x, train_y, val_x, val_y, seed=seed)
    preds = [str(p) for p in clf.predict(test_x)]
    scores = classification_scores(preds, test_y, prompts.labels, test_ids, n_resamples, seed)
    return {**report, **scores}


def _per_class_csv(path: Path, scores: dict[str, Any]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for label, row in scores.get("per_class", {}).items():
            writer.writerow([label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                             row["support"]])


def _confusion_png(path: Path, scores: dict[str, Any], title: str) -> None:
    import matplotlib.pyplot as plt

    cm = np.asarray(scores["confusion_matrix"], dtype=float)[:, :-1]  # zero-shot never leaves a row unparsed
    labels = scores["confusion_labels"][:-1]
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                color="white" if v > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
