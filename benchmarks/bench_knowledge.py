"""Knowledge track measurements (docs/knowledge.md): segmentation F1, GNN vs baseline, IG faithfulness, retrieval.

Seeded synthetic patches only (`pathinsight_models.knowledge.synthetic`), CPU, one torch thread:

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_knowledge.py [--out results.json]

For each mode (whole: 30 train patches per class; focus: 100) and GNN pooling (mean+max, GFT's sum+max),
with and without the local-density node feature, over GNN seeds 0-2: test balanced accuracy, the share
of correctly classified test graphs whose top IG feature is the class-defining one, and (focus) the
share of top-5 IG nodes inside the true focus. Also the logistic-regression baseline on 18 graph
statistics and the nearest-neighbour label hit rates of the quadrant vector and the GNN embedding.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from pathinsight_models.knowledge.attribution import faithfulness, focus_share, integrated_gradients
from pathinsight_models.knowledge.gnn import baseline_statistics_lr, classification_report, train_gnn
from pathinsight_models.knowledge.graph import image_to_graph, quadrant_vector
from pathinsight_models.knowledge.retrieval import Index, hit_rate
from pathinsight_models.knowledge.segment import get_segmenter, segmentation_quality
from pathinsight_models.knowledge.synthetic import DEFINING_FEATURES, make_patches


def _graphs(n: int, seed: int, mode: str):
    patches = make_patches(n, seed=seed, mode=mode)
    return patches, [image_to_graph(p.image, label=p.label, id=str(k)) for k, p in enumerate(patches)]


def _without_density(graphs):
    graphs = copy.deepcopy(graphs)
    for g in graphs:
        g.node_features[:, -1] = 0.0
    return graphs


def main() -> None:
    """Run every measurement and print / save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict = {}
    segmenter = get_segmenter()
    for mode in ("whole", "focus"):
        for stress in (False, True):
            patches = make_patches(10, seed=5, mode=mode, stress=stress)
            start = time.time()
            quality = segmentation_quality(patches, segmenter)
            out[f"seg_{mode}_{'stress' if stress else 'clean'}"] = {
                "f1": round(quality["f1"], 3), "ms_per_patch": round(1000 * (time.time() - start) / len(patches), 1)}
    for mode, n in (("whole", 30), ("focus", 100)):
        start = time.time()
        _, train = _graphs(n, 21, mode)
        _, val = _graphs(n // 3, 22, mode)
        patches, test = _graphs(n // 2, 23, mode)
        out[f"{mode}_graph_s_per_image"] = round((time.time() - start) / (len(train) + len(val) + len(test)), 3)
        refs = [g.label for g in test]
        classes = sorted(set(refs))
        out[f"{mode}_lr_bacc"] = round(classification_report(
            baseline_statistics_lr(train, test, classes), refs, classes)["balanced_accuracy"], 3)
        variants = {"with_local_density": (train, val, test),
                    "without_local_density": tuple(map(_without_density, (train, val, test)))}
        for variant, (tr, va, te) in variants.items():
            for pooling in ("mean+max", "sum+max"):
                accs, faiths, focus = [], [], []
                for seed in (0, 1, 2):
                    model = train_gnn(tr, va, classes, seed=seed, pooling=pooling)
                    accs.append(classification_report(model.predict(te), refs, classes)["balanced_accuracy"])
                    faiths.append(faithfulness(model, te, DEFINING_FEATURES)["per_class"])
                    if mode == "focus":
                        focus.append(np.nanmean([
                            focus_share(integrated_gradients(model, g), g, p.focus)
                            for p, g in zip(patches, te, strict=True) if p.focus and model.predict([g])[0] == g.label]))
                key = f"{mode}_{variant}_{pooling}"
                out[key] = {"gnn_bacc": [round(x, 3) for x in accs],
                            "top_feature_share": {c: [round(f[c], 3) for f in faiths] for c in faiths[0]},
                            **({"focus_share": [round(float(x), 3) for x in focus]} if focus else {})}
                print(key, out[key], flush=True)
        model = train_gnn(train, val, classes, seed=0)
        ids, labels = [g.id for g in train], [g.label for g in train]
        quadrant = Index.build("quadrant", np.stack([quadrant_vector(g) for g in train]), ids, labels)
        embedding = Index.build("embedding", model.embeddings(train), ids, labels)
        out[f"{mode}_hit_rate"] = {
            "quadrant": round(hit_rate(quadrant, np.stack([quadrant_vector(g) for g in test]), refs), 3),
            "embedding": round(hit_rate(embedding, model.embeddings(test), refs), 3)}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
