"""`PathEnhanceDS`: the dataset as a `datasets.GeneratorBasedBuilder` (our "loading script").

datasets >= 4 runs no loading scripts from the Hub; this class is instantiated by users instead:

    builder = PathEnhanceDS(config_name="captioning", data_dir="raw/", near_dup_threshold=4)
    builder.download_and_prepare()
    builder.skipped, builder.dropped          # what `build()` would list in manifest.json

`data_dir` holds one subfolder per source (`pcam/`, `crc/`, ...), or pass `sources={name: path}`. The
rows come from the same `Pipeline` as `build()` (same options, same held-out dedup, same skips), so a
config's splits hold exactly the rows `build()` writes to `data/<config>/`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import datasets

from .dedup import TRAIN
from .pipeline import HELD_OUT_FIRST, Pipeline, discover_sources
from .schema import CONFIGS, FEATURES, TASKS

logger = logging.getLogger(__name__)

_SPLIT_NAMES = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION, "test": datasets.Split.TEST}


@dataclass
class PathEnhanceDSConfig(datasets.BuilderConfig):
    """The builder's options; they mean what the same-named arguments of `build()` mean."""

    recipe: str = "default"
    seed: int = 0
    sources: dict[str, str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    on_error: str = "fail"
    scores: str | None = None
    dedup_against: list[str] = field(default_factory=list)
    near_dup_threshold: int | None = None
    num_proc: int = 1  # worker processes for image encoding (not datasets' own num_proc)


class PathEnhanceDS(datasets.GeneratorBasedBuilder):
    """PathEnhanceDS built from raw sources on this machine, one config per task plus `all`."""

    BUILDER_CONFIG_CLASS = PathEnhanceDSConfig
    BUILDER_CONFIGS = [PathEnhanceDSConfig(name=name, description=f"PathEnhanceDS {name} rows") for name in CONFIGS]
    DEFAULT_CONFIG_NAME = "all"

    _pipeline: Pipeline | None = None

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="PathInsight instruction-tuning data for histopathology VLMs",
            features=FEATURES,
            homepage="https://github.com/pathinsight/pathinsight",
        )

    @property
    def pipeline(self) -> Pipeline:
        """The build pipeline of this config (validated on first use, readers opened lazily)."""
        if self._pipeline is None:
            cfg: PathEnhanceDSConfig = self.config
            paths = cfg.sources or discover_sources(cfg.data_dir or ".", cfg.recipe)
            self._pipeline = Pipeline(paths, recipe=cfg.recipe, seed=cfg.seed, options=cfg.options,
                                      num_proc=cfg.num_proc, on_error=cfg.on_error, scores=cfg.scores,
                                      dedup_against=list(cfg.dedup_against),
                                      near_dup_threshold=cfg.near_dup_threshold)
        return self._pipeline

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Records skipped with `on_error="skip"` so far (file, record, reason)."""
        return self.pipeline.skipped

    @property
    def dropped(self) -> dict[str, str]:
        """Train row id -> why it was removed (a duplicate of a held-out or `dedup_against` image)."""
        return self.pipeline.dropped

    def close(self) -> None:
        """Close the readers (done automatically at the end of `download_and_prepare`)."""
        if self._pipeline is not None:
            self._pipeline.close()

    def _tasks(self) -> tuple[str, ...]:
        return TASKS if self.config.name == "all" else (self.config.name,)

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        pipe = self.pipeline.open()
        present = {split for _, split in pipe.groups(self._tasks())}
        if pipe.skipped:
            logger.warning("PathEnhanceDS: skipped %d bad record(s) while reading the sources (see builder.skipped)",
                           len(pipe.skipped))
        # Held-out splits first, so generating train needs no extra pass over held-out images. Split
        # names are passed as strings (not lists) so that datasets never shards them across processes.
        return [datasets.SplitGenerator(name=_SPLIT_NAMES[s], gen_kwargs={"split": s})
                for s in HELD_OUT_FIRST if s in present]

    def _generate_examples(self, split: str):
        pipe = self.pipeline.open()
        skipped, dropped = len(pipe.skipped), len(pipe.dropped)
        for task, group_split in pipe.groups(self._tasks()):
            if group_split == split:
                for row in pipe.rows(task, split):
                    yield row["id"], row
        if len(pipe.skipped) > skipped:
            logger.warning("PathEnhanceDS %s: skipped %d bad record(s) (see builder.skipped)",
                           split, len(pipe.skipped) - skipped)
        if split == TRAIN and len(pipe.dropped) > dropped:
            logger.warning("PathEnhanceDS train: removed %d row(s) duplicating held-out images (see builder.dropped)",
                           len(pipe.dropped) - dropped)

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        finally:
            self.close()
