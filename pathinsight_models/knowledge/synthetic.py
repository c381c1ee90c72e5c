"""Seeded synthetic H&E-like patches with known nuclei, for testing segmenters, GNNs and attributions.

Three classes differ in one defining factor each against a `normal` baseline (medium nuclei spread
uniformly):

- `inflammation`: many nuclei in dense clusters (defining feature: local density);
- `tumor`: the same number of nuclei as normal but large (defining features: area, perimeter).

`mode="focus"` is the harder variant: every patch is normal tissue and the class shows only in a
small focus (a disc of radius `focus_fraction` × size) holding the dense or large nuclei; `normal`
patches have no focus. Images are rendered in optical density with `skimage.color.hed2rgb`, so
colour deconvolution (`rgb2hed`) recovers a hematoxylin channel as it would on real H&E.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLASSES = ("normal", "inflammation", "tumor")
MODES = ("whole", "focus")
# Node features whose change defines each class (what IG should credit first).
DEFINING_FEATURES: dict[str, tuple[str, ...]] = {
    "inflammation": ("local_density",),
    "tumor": ("area", "perimeter"),
}


@dataclass
class SyntheticPatch:
    """One patch with its ground truth: nuclei centres (row, col), radii (equivalent), label, focus."""

    image: np.ndarray  # (size, size, 3) uint8
    label: str
    centres: np.ndarray  # (n, 2) float, row/col
    radii: np.ndarray  # (n,) equivalent radius sqrt(a*b)
    focus: tuple[float, float, float] | None = None  # (row, col, radius) in focus mode
    meta: dict = field(default_factory=dict)


def _place(rng: np.random.Generator, n: int, size: int, radii: np.ndarray, centres: list, rads: list,
           region: tuple[float, float, float] | None = None, cluster: list | None = None,
           spacing: float = 1.05, tries: int = 60) -> None:
    """Rejection-sample non-overlapping nucleus centres (appended to `centres`, `rads`)."""
    margin = 3.0
    for k in range(n):
        r = float(radii[k])
        for _ in range(tries):
            if cluster:
                cr, cc, cs = cluster[rng.integers(len(cluster))]
                p = rng.normal([cr, cc], cs)
            elif region is not None:
                ang, rad = rng.uniform(0, 2 * np.pi), region[2] * np.sqrt(rng.uniform())
                p = np.array([region[0] + rad * np.sin(ang), region[1] + rad * np.cos(ang)])
            else:
                p = rng.uniform(margin + r, size - margin - r, 2)
            if not (margin + r <= p[0] <= size - margin - r and margin + r <= p[1] <= size - margin - r):
                continue
            if centres:
                d = np.hypot(*(np.asarray(centres) - p).T)
                if np.any(d < spacing * (np.asarray(rads) + r)):
                    continue
            centres.append(p)
            rads.append(r)
            break


def _render(rng: np.random.Generator, size: int, centres: np.ndarray, axes: np.ndarray, angles: np.ndarray,
            stress: bool) -> np.ndarray:
    """Optical-density rendering: eosin background, hematoxylin ellipses with texture, then RGB."""
    from scipy.ndimage import gaussian_filter
    from skimage.color import hed2rgb

    hema = np.zeros((size, size))
    eosin = 0.35 + 0.08 * gaussian_filter(rng.normal(size=(size, size)), 3) * 3
    yy, xx = np.mgrid[0:size, 0:size]
    for (r0, c0), (a, b), th in zip(centres, axes, angles, strict=True):
        lo_r, hi_r = int(max(r0 - a - 2, 0)), int(min(r0 + a + 3, size))
        lo_c, hi_c = int(max(c0 - a - 2, 0)), int(min(c0 + a + 3, size))
        dy, dx = yy[lo_r:hi_r, lo_c:hi_c] - r0, xx[lo_r:hi_r, lo_c:hi_c] - c0
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        level = rng.uniform(0.9, 1.2)
        hema[lo_r:hi_r, lo_c:hi_c][inside] = level
    hema += 0.06 * gaussian_filter(rng.normal(size=(size, size)), 1)
    hema = gaussian_filter(hema, 0.8 if not stress else 1.3)
    hed = np.stack([np.clip(hema, 0, None) * 0.08, np.clip(eosin, 0, None) * 0.05, np.zeros_like(hema)], -1)
    if stress:  # stain strength jitter
        hed[..., 0] *= rng.uniform(0.7, 1.3)
        hed[..., 1] *= rng.uniform(0.7, 1.3)
    rgb = hed2rgb(hed)
    if stress:
        rgb = rgb + rng.normal(0, 0.03, rgb.shape)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def make_patch(label: str, seed: int, *, size: int = 128, mode: str = "whole", stress: bool = False,
               focus_fraction: float = 0.22) -> SyntheticPatch:
    """One seeded synthetic patch of class `label` (see the module docstring for the classes)."""
    if label not in CLASSES:
        raise ValueError(f"unknown synthetic class {label!r}; use one of {CLASSES}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    rng = np.random.default_rng(seed)
    scale = size / 128
    area_unit = scale * scale
    normal_r = (3.6 * scale, 0.35 * scale)
    large_r = (6.4 * scale, 0.6 * scale)
    small_r = (3.6 * scale, 0.35 * scale)  # inflammation differs by density, not size
    centres: list = []
    rads: list = []
    focus = None
    n_normal = int(rng.integers(26, 34) * area_unit)
    if mode == "whole":
        if label == "normal":
            _place(rng, n_normal, size, rng.normal(*normal_r, n_normal), centres, rads)
        elif label == "tumor":
            _place(rng, n_normal, size, rng.normal(*large_r, n_normal), centres, rads)
        else:
            clusters = [(*rng.uniform(0.25 * size, 0.75 * size, 2), 9 * scale) for _ in range(rng.integers(2, 4))]
            n_dense = int(rng.integers(40, 50) * area_unit)
            _place(rng, n_dense, size, rng.normal(*small_r, n_dense), centres, rads, cluster=clusters,
                   spacing=1.12)
            n_rest = n_normal // 2
            _place(rng, n_rest, size, rng.normal(*normal_r, n_rest), centres, rads)
    else:
        # Hard mode: background count and nucleus size vary per patch as much as the focus shifts the
        # graph-level means, and the focus replaces background nuclei, so the total count says little.
        n_total = int(rng.integers(22, 42) * area_unit)
        bg_r = (normal_r[0] * rng.uniform(0.85, 1.15), normal_r[1])
        fr = focus_fraction * size
        fc = rng.uniform(fr + 4, size - fr - 4, 2)
        n_f = 0
        if label != "normal":
            focus = (float(fc[0]), float(fc[1]), float(fr))
            if label == "tumor":
                n_f = int(rng.integers(4, 7) * area_unit)
                _place(rng, n_f, size, rng.normal(*large_r, n_f), centres, rads, region=focus)
            else:
                n_f = int(rng.integers(10, 15) * area_unit)
                _place(rng, n_f, size, rng.normal(*small_r, n_f), centres, rads,
                       cluster=[(fc[0], fc[1], fr / 3.2)], spacing=1.05)
        # Every patch also has a few isolated large nuclei: a large nucleus alone is not the class,
        # large nuclei next to each other are (a graph pattern, not a graph-level statistic).
        n_big = int(rng.integers(0, 4) * area_unit)
        _place(rng, n_big, size, rng.normal(*large_r, n_big), centres, rads, spacing=2.5)
        n_bg = max(n_total - n_f - n_big, 0)
        _place(rng, n_bg, size, rng.normal(*bg_r, n_bg), centres, rads)
    c = np.asarray(centres, dtype=float).reshape(-1, 2)
    r = np.clip(np.asarray(rads, dtype=float), 2.0 * scale, None)
    ecc = rng.uniform(1.0, 1.35, len(r))  # axis ratio a/b
    axes = np.stack([r * np.sqrt(ecc), r / np.sqrt(ecc)], 1)
    angles = rng.uniform(0, np.pi, len(r))
    image = _render(rng, size, c, axes, angles, stress)
    return SyntheticPatch(image=image, label=label, centres=c, radii=np.sqrt(axes[:, 0] * axes[:, 1]),
                          focus=focus, meta={"seed": seed, "mode": mode, "stress": stress, "size": size})


def make_patches(n_per_class: int, seed: int = 0, *, size: int = 128, mode: str = "whole",
                 stress: bool = False, classes: tuple[str, ...] = CLASSES) -> list[SyntheticPatch]:
    """`n_per_class` patches of each class, interleaved by class; patch k's seed is derived from `seed`."""
    seeds = np.random.SeedSequence(seed).generate_state(n_per_class * len(classes))
    return [make_patch(classes[k % len(classes)], int(seeds[k]), size=size, mode=mode, stress=stress)
            for k in range(n_per_class * len(classes))]


def centroid_f1(true: np.ndarray, found: np.ndarray, max_distance: float) -> dict[str, float]:
    """Detection quality: one-to-one matching of centroids within `max_distance` (Hungarian), P/R/F1."""
    from scipy.optimize import linear_sum_assignment

    true = np.asarray(true, dtype=float).reshape(-1, 2)
    found = np.asarray(found, dtype=float).reshape(-1, 2)
    if len(true) == 0 or len(found) == 0:
        tp = 0
    else:
        d = np.hypot(true[:, None, 0] - found[None, :, 0], true[:, None, 1] - found[None, :, 1])
        cost = np.where(d <= max_distance, d, 1e6)
        rows, cols = linear_sum_assignment(cost)
        tp = int((cost[rows, cols] <= max_distance).sum())
    precision = tp / len(found) if len(found) else 0.0
    recall = tp / len(true) if len(true) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true": len(true), "found": len(found), "tp": tp}


def write_synthetic_dataset(output: str | os.PathLike[str], n_per_class: dict[str, int] | int = 12, *,
                            seed: int = 0, size: int = 128, mode: str = "whole", overwrite: bool = False) -> Path:
    """A PathEnhanceDS-layout folder with a `classification` config of synthetic patches.

    Splits train/validation/test get `n_per_class` (an int for all, or per split) patches of each class;
    rows have the shared schema (one PNG image, a classification question, the label). Written through
    the guarded output API (kind `knowledge-synthetic`): an existing non-empty `output` is replaced only
    with `overwrite` and only when it is an earlier output of this function.
    """
    import hashlib
    import io

    from PIL import Image

    from pathenhanceds.atomic import begin_output_dir, check_output, commit_output_dir, marker_fields
    from pathenhanceds.layout import CARD_FILE, MANIFEST_FILE, config_dir
    from pathenhanceds.schema import make_messages
    from pathenhanceds.write.parquet import write_split

    sizes = n_per_class if isinstance(n_per_class, dict) else {
        "train": n_per_class, "validation": max(2, n_per_class // 3), "test": max(2, n_per_class // 2)}
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    output = check_output(output, overwrite=overwrite, kind="knowledge-synthetic")
    tmp = begin_output_dir(output, kind="knowledge-synthetic")  # beside it, the user's umask
    digest = hashlib.sha256()
    question = f"Which class best describes this patch? Options: {', '.join(CLASSES)}."
    counts = {}
    try:
        for k, (split, n) in enumerate(sizes.items()):
            rows = []
            for j, patch in enumerate(make_patches(n, seed=seed * 1000 + k, size=size, mode=mode)):
                buf = io.BytesIO()
                Image.fromarray(patch.image).save(buf, format="PNG")
                data = buf.getvalue()
                rows.append({"id": f"synthetic/{split}/{j:05d}", "source": "synthetic_cells", "task": "classification",
                             "images": [{"bytes": data, "path": None}],
                             "messages": make_messages([("user", question), ("assistant", patch.label)]),
                             "label": patch.label, "answer_type": "open",
                             "image_sha256": [hashlib.sha256(data).hexdigest()], "license": "CC0-1.0"})
            counts[split] = write_split(rows, config_dir(tmp, "classification"), split, digest).rows
        import yaml

        from .build import dataset_info

        header = {"license": "cc0-1.0", "configs": [{
            "config_name": "classification", "default": True,
            "data_files": [{"split": s, "path": f"data/classification/{s}-*.parquet"} for s in sizes]}],
            "dataset_info": dataset_info(tmp, {"classification": counts})}
        (tmp / CARD_FILE).write_text(
            f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n\n# Synthetic H&E-like cell patches\n\n"
            f"Seeded synthetic patches ({mode} mode, seed {seed}) of the classes {', '.join(CLASSES)}; made by "
            "`pathinsight_models.knowledge.synthetic`. Not real tissue.\n")
        (tmp / MANIFEST_FILE).write_text(json.dumps({"name": "synthetic-cells", **marker_fields("knowledge-synthetic"),
                                                     "seed": seed, "mode": mode,
                                                     "synthetic": True, "digest": digest.hexdigest(),
                                                     "counts": {"classification": counts}}, indent=2) + "\n")
        commit_output_dir(tmp, output, kind="knowledge-synthetic")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output
