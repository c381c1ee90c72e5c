"""Synthetic OpenPath: a hydrated JSONL, images/ and the released id list `dataframe_208K_rows.csv`.

The text mixes URLs, @mentions, HTML entities and hashtags; some tweets clean down to nothing,
to a question or to too few words, one has two images and a few are missing from the id list.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .textures import STYLES, texture

_LONG = ("The synthetic section shows sheets of generated cells with a repeating {style} pattern, pale "
         "background and darker nuclei; there is no real tissue here, only a texture written for software "
         "tests of the caption pipeline, which must keep long captions intact.")


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _text(i: int, style: str) -> str:
    kind = i % 10
    if kind == 7:
        return f"https://t.co/syn{i:04d} #pathology #synthetic"  # nothing left after cleaning
    if kind == 8:
        return f"What is your diagnosis? @synthetic_path #pathtwitter https://t.co/syn{i:04d}"  # question only
    if kind == 9:
        return "Wow! #dermpath"  # too short
    if kind in (2, 5):
        return f"RT @synthetic_path: {_LONG.format(style=style)} https://t.co/syn{i:04d} #pathology #gipath"
    return (f"@synthetic_lab Synthetic case {i}: {style} texture &amp; generated #histology pattern. "
            f"https://t.co/syn{i:04d} #pathology #synthetic")


def write(folder: Path, rng: np.random.Generator, sizes: Any) -> None:
    """Write the synthetic openpath source in its native layout into `folder` (sizes from `sizes`, pixels from `rng`)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines, rows = [], []
    for i in range(sizes.openpath_tweets):
        tweet_id = str(1_400_000_000_000_000_000 + 7_919 * i)
        style = STYLES[int(rng.integers(len(STYLES)))]
        text = _text(i, style)
        for k in range(2 if i == 3 else 1):
            name = f"images/{tweet_id}_{k}.jpg"
            (folder / name).write_bytes(_jpeg(texture(style, 64, rng)))
            lines.append(json.dumps({"tweet_id": tweet_id, "text": text, "image": name}))
        if i % 13 != 5:  # the rest are hydrated tweets that the id list does not hold
            source = "Twitter reply" if i % 6 == 1 else "Twitter"
            rows.append([len(rows), source, "#synthetic", f"https://twitter.com/synthetic/status/{tweet_id}",
                         tweet_id, str(1_500_000_000_000_000_000 + i)])
    for _ in range(3):  # PathLAION rows carry no tweet id
        rows.append([len(rows), "PathLAION", "----", "https://example.org/synthetic.jpg", "", ""])
    (folder / "openpath_hydrated.jsonl").write_text("\n".join(lines) + "\n")
    with open(folder / "dataframe_208K_rows.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
