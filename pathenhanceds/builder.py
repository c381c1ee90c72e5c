"""`PathEnhanceDS`: the dataset as a `datasets.GeneratorBasedBuilder` (our "loading script").

datasets >= 4 runs no loading scripts from the Hub; this class is instantiated by users instead:

    PathEnhanceDS(config_name="captioning", data_dir="raw/").download_and_prepare()

`data_dir` holds one subfolder per source (`pcam/`, `crc/`, ...), or pass `sources={name: path}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets

from .build import discover_sources, open_sources, plan_rows
from .recipes import resolve_options
from .rows import iter_rows
from .schema import CONFIGS, FEATURES, SPLITS, TASKS
from .sources import BuildContext

_SPLIT_NAMES = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION, "test": datasets.Split.TEST}


@dataclass
class PathEnhanceDSConfig(datasets.BuilderConfig):
    recipe: str = "default"
    seed: int = 0
    sources: dict[str, str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    on_error: str = "fail"


class PathEnhanceDS(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = PathEnhanceDSConfig
    BUILDER_CONFIGS = [PathEnhanceDSConfig(name=name, description=f"PathEnhanceDS {name} rows") for name in CONFIGS]
    DEFAULT_CONFIG_NAME = "all"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="PathInsight instruction-tuning data for histopathology VLMs",
            features=FEATURES,
            homepage="https://github.com/pathinsight/pathinsight",
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        cfg: PathEnhanceDSConfig = self.config
        paths = cfg.sources or discover_sources(cfg.data_dir or ".")
        self._sources = open_sources(paths)
        self._ctx = BuildContext(on_error=cfg.on_error)
        plans = plan_rows(self._sources, cfg.recipe, cfg.seed, resolve_options(cfg.options), self._ctx)
        tasks = TASKS if cfg.name == "all" else (cfg.name,)
        by_split = {s: [p for p in plans if p.split == s and p.task in tasks] for s in SPLITS}
        return [datasets.SplitGenerator(name=_SPLIT_NAMES[s], gen_kwargs={"plans": by_split[s]})
                for s in SPLITS if by_split[s]]

    def _generate_examples(self, plans):
        for row in iter_rows(plans, self._sources, self._ctx):
            yield row["id"], row
