"""Markdown/PNG rendering: one run's report.md, confusion matrices, and the base-vs-tuned comparison table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.labels import CRC_CLASSES

_CODES = {name: code for code, name in CRC_CLASSES.items()}


def fmt(value: Any, digits: int = 3) -> str:
    """A metric value with `digits` decimals; an em dash for None."""
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    """A CI as `[lo, hi]`; an em dash when there is none."""
    return "—" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def cell(entry: dict[str, Any] | None) -> str:
    """`0.912 [0.881, 0.940]`, or an em dash when missing."""
    if not entry or entry.get("value") is None:
        return "—"
    ci = entry.get("ci")
    return fmt(entry["value"]) + (f" {fmt_ci(ci)}" if ci else "")


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_confusion_png(result: dict[str, Any], path: Path) -> str:
    """Confusion-matrix heat map (rows = reference, columns = parsed prediction incl. `unparsed`)."""
    plt = _mpl()
    extras = result["extras"]
    cm = extras["confusion_matrix"]
    cols = [_CODES.get(c, c) for c in extras["confusion_labels"]]
    rows = cols[: len(cm)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(cols), 1.0 + 0.55 * len(rows)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("parsed prediction")
    ax.set_ylabel("reference")
    ax.set_title(f"{result['task']} (n={result['n']})")
    top = max((max(r) for r in cm), default=0) or 1
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _task_section(name: str, r: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", "", r.get("description", ""), ""]
    lines.append(f"- items: {r['n']}; bootstrap unit: {r['bootstrap']['unit']} ({r['bootstrap']['n_units']})")
    reasons = ", ".join(f"{k}: {v}" for k, v in r.get("parse_failure_reasons", {}).items())
    lines.append(f"- unparsed answers: **{r['parse_failures']}**" + (f" ({reasons})" if reasons else ""))
    if r.get("parsing"):
        lines.append(f"- parsing: {r['parsing']}")
    if r.get("decoding"):
        d = r["decoding"]
        lines.append(f"- decoding: {d['strategy']}, max_new_tokens={d['max_new_tokens']}")
    mods = ", ".join(f"`{v}`" for v in r.get("metric_modules", {}).values())
    if mods:
        lines.append(f"- metric modules: {mods}")
    if r.get("data", {}).get("config"):
        d = r["data"]
        lines.append(f"- rows: config `{d['config']}`, split `{d.get('split')}`, {d.get('rows', '?')} rows")
    lines += ["", "| mode | metric | value | 95% CI |", "|---|---|---|---|"]
    for mode, metrics in r["metrics"].items():
        for metric, entry in metrics.items():
            lines.append(f"| {mode} | {metric} | {fmt(entry['value'])} | {fmt_ci(entry.get('ci'))} |")
    lines.append("")
    extras = r.get("extras", {})
    if "per_class" in extras:
        lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for cls, v in extras["per_class"].items():
            lines.append(f"| {cls} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f1'])} | {v['support']} |")
        lines.append("")
    if r.get("confusion_png"):
        lines += [f"![confusion matrix]({r['confusion_png']})", ""]
    prompts = r.get("prompts")
    if prompts:
        lines.append(f"Prompts ({prompts['distinct']} distinct), most common:")
        lines.append("")
        for p in prompts["most_common"][:5]:
            lines.append(f"- ({p['count']}×) {p['text'][:300]}")
        lines.append("")
    if r.get("predictions"):
        lines += [f"Predictions: `{r['predictions']}`", ""]
    return lines


def render_report(results: dict[str, Any]) -> str:
    """report.md text of one results.json: provenance, then per task its metrics with CIs."""
    m, d = results.get("model", {}), results.get("data", {})
    boot = next(iter(results["tasks"].values()), {}).get("bootstrap", {})
    lines = ["# PathInsight evaluation report", ""]
    model = m.get("id", "?") + (f" + adapter {m['adapter']}" if m.get("adapter") else "")
    lines.append(f"- model: `{model}`" + (f" (commit {m['commit']})" if m.get("commit") else "")
                 + (f" (digest {m['digest'][:12]})" if m.get("digest") else ""))
    lines.append(f"- data: `{d.get('path', d.get('kind', '?'))}`" + (f", digest `{d['digest']}`" if d.get("digest") else "")
                 + (f", split `{results['split']}`" if results.get("split") else "")
                 + (f", limit {results['limit']}" if results.get("limit") else ""))
    v = results.get("versions", {})
    lines.append(f"- created {results.get('created')} with pathinsight {v.get('pathinsight')}, "
                 f"transformers {v.get('transformers', '—')}, torch {v.get('torch', '—')}")
    if boot:
        lines.append(f"- CIs: {boot['confidence']:.0%} percentile bootstrap, {boot['n_resamples']} resamples, "
                     f"seed {boot['seed']}; items sharing an image are resampled together")
    lines += ["", "## Summary", "", "| task | metric (mode) | value | 95% CI | n | unparsed |", "|---|---|---|---|---|---|"]
    for name, r in results["tasks"].items():
        for h in r.get("headline", []):
            entry = r["metrics"][h["mode"]][h["metric"]]
            lines.append(f"| {name} | {h['label']} ({h['mode']}) | {fmt(entry['value'])} | {fmt_ci(entry.get('ci'))} "
                         f"| {r['n']} | {r['parse_failures']} |")
    lines.append("")
    for name, r in results["tasks"].items():
        lines += _task_section(name, r)
    return "\n".join(lines)


def write_report(results: dict[str, Any], path: Path) -> None:
    """Write `render_report(results)` to `path`."""
    path.write_text(render_report(results), encoding="utf-8")


# --- compare -----------------------------------------------------------------------------------


def load_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """results.json files (or directories holding one) as dicts; an InputError for a missing/bad file."""
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "results.json"
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("results file not found", file=path, fix="pass OUTPUT/results.json of an eval run") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"not a JSON file ({exc.msg})", file=path) from None
        if not isinstance(res, dict) or "tasks" not in res:
            raise InputError("not a PathInsight results.json (no `tasks`)", file=path)
        res["_path"] = str(path)
        out.append(res)
    return out


def _label(res: dict[str, Any]) -> str:
    m = res.get("model", {})
    label = str(m.get("id", "?"))
    if m.get("adapter"):
        label += f" + {Path(str(m['adapter'])).name}"
    return label


def comparison(results: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The models x (task, metric) grid behind the compare table, plus notes on comparability."""
    if labels is not None and len(labels) != len(results):
        raise InputError(f"{len(labels)} labels for {len(results)} results files", fix="give one label per file")
    names = list(labels) if labels else [_label(r) for r in results]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):  # same model twice (e.g. two seeds): tell them apart by folder
        if names.count(n) > 1:
            seen[n] = seen.get(n, 0) + 1
            names[i] = f"{n} ({Path(results[i]['_path']).parent.name or seen[n]})"
    columns: list[tuple[str, str, str, str]] = []  # task, mode, metric, label
    for res in results:
        for task, r in res["tasks"].items():
            for h in r.get("headline", []):
                key = (task, h["mode"], h["metric"], h["label"])
                if key not in columns:
                    columns.append(key)
    rows = []
    for name, res in zip(names, results, strict=True):
        cells = []
        for task, mode, metric, _ in columns:
            r = res["tasks"].get(task)
            cells.append(r["metrics"].get(mode, {}).get(metric) if r else None)
        rows.append({"label": name, "cells": cells})
    notes = []
    for task in dict.fromkeys(c[0] for c in columns):
        ns = {r["tasks"][task]["n"] for r in results if task in r["tasks"]}
        digests = {json.dumps(r["tasks"][task].get("data", {}).get("digest") or r.get("data", {}).get("digest"))
                   for r in results if task in r["tasks"]}
        fails = [f"{names[i]}: {r['tasks'][task]['parse_failures']}" for i, r in enumerate(results) if task in r["tasks"]]
        note = f"{task}: n = {', '.join(map(str, sorted(ns)))}; unparsed — {'; '.join(fails)}"
        if len(ns) > 1 or len(digests) > 1:
            note += " — **not comparable: different items or data**"
        notes.append(note)
    return {"columns": columns, "rows": rows, "notes": notes}


def render_compare_markdown(grid: dict[str, Any]) -> str:
    """The models x headline-metrics table of a compare grid as Markdown."""
    header = ["model", *[f"{label} ({mode})" for _, mode, _, label in grid["columns"]]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in grid["rows"]:
        lines.append("| " + " | ".join([row["label"], *[cell(c) for c in row["cells"]]]) + " |")
    lines += ["", "Values with 95% bootstrap CIs in brackets; metric modes in parentheses.", ""]
    lines += [f"- {n}" for n in grid["notes"]]
    return "\n".join(lines) + "\n"


def render_compare_png(grid: dict[str, Any], path: Path) -> Path:
    """The compare grid as a PNG table at `path`."""
    plt = _mpl()
    header = [f"{label}\n({mode})" for _, mode, _, label in grid["columns"]]
    body = [[cell(c).replace(" [", "\n[") for c in row["cells"]] for row in grid["rows"]]
    width = max(4.0, 1.6 + 1.7 * len(header))
    fig, ax = plt.subplots(figsize=(width, 0.9 + 0.6 * (len(body) + 1)))
    ax.axis("off")
    table = ax.table(cellText=body, rowLabels=[r["label"] for r in grid["rows"]], colLabels=header, loc="center",
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 2.4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def compare(
    paths: Sequence[str | Path], *, labels: Sequence[str] | None = None, output: str | Path | None = None
) -> tuple[str, Path | None]:
    """Markdown table (models x tasks, with CIs) and, with `output`, compare.md + compare.png there."""
    grid = comparison(load_results(paths), labels)
    markdown = render_compare_markdown(grid)
    png = None
    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(markdown, encoding="utf-8")
        png = render_compare_png(grid, out / "compare.png")
    return markdown, png
