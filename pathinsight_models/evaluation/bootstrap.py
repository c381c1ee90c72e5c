"""Percentile bootstrap confidence intervals, resampling clusters (images) with a seed.

Items that share an image (the captions of one bladder image, the questions about one PathVQA
figure) are not independent, so whole clusters are resampled. Every metric of a task is computed
on the same resamples, and a statistic is a function of per-unit *weights* (how often each unit was
drawn), which makes corpus-level metrics (corpus BLEU, macro F1) as cheap to resample as means.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

CHUNK = 128  # resamples drawn at once (bounds memory at CHUNK x n_units floats)


@dataclass
class Stat:
    """One metric as a function of unit weights.

    Either `values` (the metric is the mean of the non-NaN per-unit values; NaN = not applicable, e.g.
    an open question for closed accuracy) or `fn(weights) -> float`. `rep[i]` is the index of the item
    whose cluster unit i belongs to (default: unit i is item i).
    """

    values: np.ndarray | None = None
    fn: Callable[[np.ndarray], float] | None = None
    rep: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if (self.values is None) == (self.fn is None):
            raise ValueError("give exactly one of values or fn")
        if self.values is not None:
            self.values = np.asarray(self.values, dtype=float)

    def weighted(self, weights: np.ndarray) -> np.ndarray:
        """Metric for each row of `weights` (shape resamples x units)."""
        if self.values is not None:
            mask = ~np.isnan(self.values)
            num = weights @ np.where(mask, self.values, 0.0)
            den = weights @ mask.astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        assert self.fn is not None
        return np.array([self.fn(w) for w in weights], dtype=float)

    def point(self, n_units: int) -> float:
        """The metric on the full sample (every unit weight 1)."""
        return float(self.weighted(np.ones((1, n_units)))[0])


def mean_stat(values: Sequence[float | None], rep: Sequence[int] | None = None) -> Stat:
    """A mean statistic over per-unit values (None = not applicable to that unit)."""
    return Stat(values=np.array([np.nan if v is None else float(v) for v in values]),
                rep=None if rep is None else np.asarray(rep))


def cluster_index(keys: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Dense cluster ids in order of first appearance."""
    ids: dict[Hashable, int] = {}
    out = np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
    return out, len(ids)


def bootstrap(
    stats: dict[str, Stat],
    item_clusters: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Percentile CIs for every stat, all computed on the same seeded cluster resamples.

    A CI is None when fewer than two resamples give a defined value (e.g. no items of that kind).
    """
    if not stats or n_resamples <= 0 or len(item_clusters) == 0:
        return {name: None for name in stats}
    n_clusters = int(item_clusters.max()) + 1
    unit_clusters = {
        name: item_clusters if s.rep is None else item_clusters[np.asarray(s.rep)] for name, s in stats.items()
    }
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in stats}
    done = 0
    while done < n_resamples:
        size = min(CHUNK, n_resamples - done)
        picks = rng.integers(0, n_clusters, size=(size, n_clusters))
        counts = np.stack([np.bincount(row, minlength=n_clusters) for row in picks]).astype(float)
        for name, stat in stats.items():
            draws[name].append(stat.weighted(counts[:, unit_clusters[name]]))
        done += size
    alpha = (1.0 - confidence) / 2.0
    out: dict[str, tuple[float, float] | None] = {}
    for name, parts in draws.items():
        values = np.concatenate(parts)
        values = values[~np.isnan(values)]
        if len(values) < 2:
            out[name] = None
        else:
            lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
            out[name] = (float(lo), float(hi))
    return out
