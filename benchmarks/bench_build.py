"""P1 build benchmark: rows/s of `pathenhanceds.build` vs a naive `datasets` pipeline and vs the
encode/IO-only limit, on the same synthetic PCam-format HDF5 files, side by side in one run.

    python benchmarks/bench_build.py --rows 5000 [--num-proc 2] [--rss]

- naive: `Dataset.from_generator` yielding PIL images + messages, then `to_parquet` (what a user
  would write with `datasets` alone).
- limit: read the same patches from HDF5, PNG-encode them (same encoder, same number of processes)
  and write the bytes to one parquet file; no schema, no messages, no hashing, no checks.
- naive is single-process, as a user would write it; ours runs with `--num-proc` (the CLI default
  uses every available core).
- `--rss` also measures peak RSS of a separate `pathinsight data build` process at 1K and 20K rows.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def write_pcam(folder: Path, rows: int, seed: int = 0) -> Path:
    """PCam-format x/y files with textured (realistically compressible) 96x96 patches."""
    from pathenhanceds.sample.textures import texture

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tiles = np.stack([texture(style, 96, rng) for style in ("tumour", "normal") for _ in range(32)])
    for split, n in (("train", rows), ("valid", 16), ("test", 16)):
        labels = (rng.random(n) < 0.5).astype(np.uint8)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            x = f.create_dataset("x", (n, 96, 96, 3), np.uint8, chunks=(min(32, n), 96, 96, 3))
            for start in range(0, n, 1024):
                k = min(1024, n - start)
                idx = rng.integers(0, len(tiles), k)
                shift = rng.integers(0, 96, k)
                x[start : start + k] = np.stack([np.roll(tiles[i], s, axis=1) for i, s in zip(idx, shift, strict=True)])
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=labels.reshape(n, 1, 1, 1))
    return folder


def run_ours(src: Path, out: Path, rows: int, num_proc: int) -> float:
    from pathenhanceds import build

    start = time.perf_counter()
    build({"pcam": src}, out, options={"pcam_train_size": rows, "pcam_validation_size": 0, "pcam_test_size": 0},
          num_proc=num_proc, overwrite=True)
    return time.perf_counter() - start


def run_naive(src: Path, out: Path, rows: int) -> float:
    import datasets

    from pathenhanceds.schema import make_messages

    def gen():
        with h5py.File(src / "camelyonpatch_level_2_split_train_x.h5") as fx, \
                h5py.File(src / "camelyonpatch_level_2_split_train_y.h5") as fy:
            for i in range(rows):
                label = int(fy["y"][i, 0, 0, 0])
                yield {"id": f"pcam/train_{i:06d}", "images": [Image.fromarray(fx["x"][i])],
                       "messages": make_messages([("user", "Does this image contain cancerous cells?"),
                                                  ("assistant", "Yes." if label else "No.")]),
                       "label": "yes" if label else "no"}

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.Dataset.from_generator(gen, cache_dir=cache)
        ds.to_parquet(str(out / "naive.parquet"))
    return time.perf_counter() - start


def _encode_block(args: tuple[str, int, int]) -> list[bytes]:
    from pathenhanceds.images import png_rgb8

    path, start, stop = args
    with h5py.File(path) as fx:
        return [png_rgb8(patch) for patch in fx["x"][start:stop]]


def run_limit(src: Path, out: Path, rows: int, num_proc: int) -> float:
    """Read + PNG-encode + write only, with as many processes as ours gets."""
    import multiprocessing as mp

    path = str(src / "camelyonpatch_level_2_split_train_x.h5")
    blocks = [(path, s, min(rows, s + 256)) for s in range(0, rows, 256)]
    start = time.perf_counter()
    writer = pq.ParquetWriter(out / "limit.parquet", pa.schema([("image", pa.binary())]))
    with mp.get_context("fork").Pool(num_proc) as pool:
        for batch in pool.imap(_encode_block, blocks):
            writer.write_table(pa.table({"image": batch}))
    writer.close()
    return time.perf_counter() - start


def peak_rss_of_build(src: Path, out: Path, rows: int) -> float:
    """Peak RSS (MB) of a fresh `pathinsight data build` process."""
    cmd = [sys.executable, "-m", "pathinsight_models.cli", "data", "build", "--source", f"pcam={src}",
           "--output", str(out), "--overwrite", "--pcam-train-size", str(rows),
           "--pcam-validation-size", "0", "--pcam-test-size", "0"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--rss", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        src = write_pcam(work / "pcam", max(args.rows, 20_000 if args.rss else 0))
        (work / "naive").mkdir()
        (work / "limit").mkdir()
        t_limit = run_limit(src, work / "limit", args.rows, args.num_proc)
        t_naive = run_naive(src, work / "naive", args.rows)
        t_ours = run_ours(src, work / "ours", args.rows, args.num_proc)
        n = args.rows
        print(f"rows: {n}, num_proc: {args.num_proc}")
        print(f"{'pipeline':<28}{'seconds':>10}{'rows/s':>10}")
        for name, t in (("pathinsight data build", t_ours), ("naive from_generator", t_naive),
                        ("encode/IO-only limit", t_limit)):
            print(f"{name:<28}{t:>10.2f}{n / t:>10.0f}")
        print(f"speed-up vs naive: {t_naive / t_ours:.2f}x (goal >= 3x)")
        print(f"fraction of limit: {t_limit / t_ours:.2f} (goal >= 0.8)")
        if args.rss:
            r1 = peak_rss_of_build(src, work / "rss1k", 1_000)
            r20 = peak_rss_of_build(src, work / "rss20k", 20_000)
            print(f"peak RSS: 1K rows {r1:.0f} MB, 20K rows {r20:.0f} MB (ratio {r20 / r1:.2f}; goal: flat, < 1.5 GB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
