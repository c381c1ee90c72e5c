"""The one definition of a built PathEnhanceDS folder (what `build()` writes and the Hub pusher checks).

    <output>/README.md                                         dataset card, YAML `configs:` (`all` default)
    <output>/manifest.json                                     inputs, counts, digest, skips, dedup
    <output>/data/<config>/<split>-NNNNN-of-NNNNN.parquet      shards, one folder per task config

and, for raw source folders, the marker file the synthetic sample writer leaves in each of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CARD_FILE = "README.md"
MANIFEST_FILE = "manifest.json"
DATA_DIR = "data"
DEFAULT_CONFIG = "all"  # the card's default config: every task's files, no second copy

# A published shard, repo-relative POSIX path.
SHARD_RE = re.compile(
    rf"^{DATA_DIR}/(?P<config>[A-Za-z0-9_.-]+)/(?P<split>[A-Za-z0-9_.-]+)-\d{{5}}-of-\d{{5}}\.parquet$"
)

# Raw-source folders written by `pathinsight data sample` hold this file (so builds from them are
# labelled synthetic without importing the sample writer).
SYNTHETIC_MARKER = "SYNTHETIC.md"


def shard_name(split: str, index: int, total: int) -> str:
    """File name of shard `index` (0-based) of `total` for one split."""
    return f"{split}-{index:05d}-of-{total:05d}.parquet"


def config_dir(root: Path, config: str) -> Path:
    """The folder holding one task config's shards."""
    return root / DATA_DIR / config


def split_glob(split: str, config: str | None = None) -> str:
    """The card `data_files` pattern of a split: one config's shards, or every config's (for `all`)."""
    return f"{DATA_DIR}/{config or '*'}/{split}-*.parquet"


def is_synthetic(path: str | os.PathLike[str]) -> bool:
    """Whether a raw source folder was written by the synthetic sample writer."""
    return (Path(path) / SYNTHETIC_MARKER).exists()


__all__ = ["CARD_FILE", "DATA_DIR", "DEFAULT_CONFIG", "MANIFEST_FILE", "SHARD_RE", "SYNTHETIC_MARKER", "config_dir",
           "is_synthetic", "shard_name", "split_glob"]
