"""Render the dataset card (README.md) from the top-level `dataset_card.md` template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

from ..layout import DATA_DIR, DEFAULT_CONFIG, split_glob
from ..schema import CONFIGS, SPLITS, TASKS

TEMPLATE = Path(__file__).resolve().parents[1] / "dataset_card.md"


def configs_yaml(present: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The README `configs:` section; `all` points at the task configs' files (no second copy)."""
    configs = []
    all_splits = [s for s in SPLITS if any(s in splits for splits in present.values())]
    configs.append({
        "config_name": DEFAULT_CONFIG,
        "default": True,
        "data_files": [{"split": s, "path": split_glob(s)} for s in all_splits],
    })
    for task in TASKS:
        if present.get(task):
            configs.append({
                "config_name": task,
                "data_files": [{"split": s, "path": split_glob(s, task)} for s in SPLITS
                               if s in present[task]],
            })
    return configs


def dataset_info_yaml(counts: dict[str, dict[str, dict[str, int]]], file_sizes: dict[str, int]) -> list[dict[str, Any]]:
    """`dataset_info:` per config (features, split sizes, bytes).

    Besides documenting the build, it makes `load_dataset`'s cache key depend on the content:
    without it two builds in folders of the same name share one cache entry.
    """
    import datasets

    from ..schema import FEATURES

    def split_bytes(config: str, split: str) -> int:
        prefix = f"{DATA_DIR}/" if config == DEFAULT_CONFIG else f"{DATA_DIR}/{config}/"
        return sum(size for path, size in file_sizes.items()
                   if path.startswith(prefix) and path.rsplit("/", 1)[1].startswith(f"{split}-"))

    infos = []
    for config in (DEFAULT_CONFIG, *[t for t in TASKS if t in counts]):
        splits = datasets.SplitDict()
        for split in SPLITS:
            n = sum(sum(counts[c].get(split, {}).values()) for c in counts if config in (DEFAULT_CONFIG, c))
            if n:
                splits.add(datasets.SplitInfo(name=split, num_bytes=split_bytes(config, split), num_examples=n))
        size = sum(s.num_bytes for s in splits.values())
        info = datasets.DatasetInfo(features=FEATURES, splits=splits, download_size=size, dataset_size=size,
                                    config_name=config)
        infos.append(info._to_yaml_dict())
    return infos


def size_category(n: int) -> str:
    """The Hub `size_categories` bucket for a row count."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def md_cell(value: object) -> str:
    """Text safe inside one Markdown table cell: `|` escaped, line breaks as spaces."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.splitlines())


def render_card(context: dict[str, Any]) -> str:
    """The dataset card (README.md) text: YAML header (configs, dataset_info) plus the rendered template."""
    counts: dict[str, dict[str, dict[str, int]]] = context["counts"]  # config -> split -> source -> n
    present = {cfg: sorted(splits) for cfg, splits in counts.items()}
    total_rows = sum(n for splits in counts.values() for by_src in splits.values() for n in by_src.values())
    header = {
        "pretty_name": "PathEnhanceDS",
        "license": context["license"],
        "language": ["en"],
        "task_categories": ["image-text-to-text", "visual-question-answering", "image-classification"],
        "tags": ["histopathology", "pathology", "medical", "instruction-tuning", "vision-language"]
        + (["synthetic"] if context.get("synthetic") else []),
        "size_categories": [size_category(total_rows)],
        "configs": configs_yaml(present),
        "dataset_info": dataset_info_yaml(counts, context["file_sizes"]),
    }
    count_rows = []
    for cfg in [c for c in CONFIGS if c in counts]:
        sources = sorted({src for by_src in counts[cfg].values() for src in by_src})
        for src in sources:
            count_rows.append({"source": src, "config": cfg,
                               **{s: counts[cfg].get(s, {}).get(src, 0) for s in SPLITS}})
    totals = {s: sum(counts[c].get(s, {}).get(src, 0) for c in counts for src in counts[c].get(s, {}))
              for s in SPLITS}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)  # Markdown, not HTML
    env.filters["md_cell"] = md_cell
    template = env.from_string(TEMPLATE.read_text())
    return template.render(
        yaml_header=yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(),
        splits=SPLITS, count_rows=count_rows, present_configs=[t for t in TASKS if t in counts], totals=totals, **context,
    )
