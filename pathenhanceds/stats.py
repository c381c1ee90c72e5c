"""Counts tables of a build (what `pathinsight data build` and `data stats` print)."""

from __future__ import annotations


def format_counts(counts: dict[str, dict[str, dict[str, int]]]) -> str:
    """The counts table: source × config rows, split columns."""
    from .schema import SPLITS

    lines = [f"{'config':<15}{'source':<20}" + "".join(f"{s:>12}" for s in SPLITS)]
    totals = dict.fromkeys(SPLITS, 0)
    for cfg, by_split in counts.items():
        for src in sorted({s for d in by_split.values() for s in d}):
            values = [by_split.get(s, {}).get(src, 0) for s in SPLITS]
            for s, v in zip(SPLITS, values, strict=True):
                totals[s] += v
            lines.append(f"{cfg:<15}{src:<20}" + "".join(f"{v:>12}" for v in values))
    lines.append(f"{'total':<35}" + "".join(f"{totals[s]:>12}" for s in SPLITS))
    return "\n".join(lines)
