"""P5 PathGen benchmark: patches/s of cutting 672x672 patches from whole-slide images and encoding them.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_pathgen.py --slides 8 --patches 32 [--num-proc 2] [--rss]

All on the same synthetic aperio-like pyramidal TIFFs (deflate tiles; textured, noisy pixels so PNG
costs what it costs on tissue), side by side in one run:

- limit: OpenSlide read-only — a `multiprocessing.Pool` over slides, each opened once, every patch read
  with `read_region` and converted to an RGB array; no encoding, no writing.
- pool: a plain `multiprocessing.Pool` over slides that cuts and encodes the same patches with the same
  PNG encoder (`images.png_rgb8`) and writes one PNG file per patch, as PathGen's own script does: what
  a user would write by hand (no hashing, no checks, no parquet, no manifest).
- ours (local): `pathenhanceds.build(..., num_proc=N)` on the PathGen JSON: lists and resolves records,
  reads slide headers, cuts, encodes, hashes, writes parquet, manifest and card.
- ray 1 / ray 2: the same build with `executor="ray"` on a local Ray of 1 and 2 CPUs, timed after Ray is
  up; Ray's start-up (init + a first task) is measured apart (a build pays it once).
- `--rss`: peak RSS of a separate `pathinsight data build` process (and its workers) at S and 4S slides.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PATCH = 672


def write_slides(root: Path, slides: int, patches: int, seed: int = 0) -> Path:
    """DIR/PathGen-1.6M.json + DIR/slides/<uuid>/<wsi_id>.svs, `patches` records per slide on a grid."""
    import uuid

    import tifffile

    from pathenhanceds.sample.textures import texture

    rng = np.random.default_rng(seed)
    tiles = [texture(style, 512, rng) for style in ("tumour", "normal", "grade1", "STR")]
    side = int(np.ceil(np.sqrt(patches)))
    size = side * PATCH + 64
    records = []
    for s in range(slides):
        wsi_id = f"TCGA-BM-{s:04d}-01Z-00-DX1.{str(uuid.UUID(int=s + 1)).upper()}"
        cells = [np.roll(tiles[int(rng.integers(4))], int(rng.integers(512)), axis=1) for _ in range(4)]
        block = np.concatenate([np.concatenate(cells[:2], 1), np.concatenate(cells[2:], 1)], 0)
        reps = -(-size // 1024)
        image = np.tile(block, (reps, reps, 1))[:size, :size]
        noise = rng.integers(-4, 5, image.shape, dtype=np.int16)
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        path = root / "slides" / str(uuid.uuid5(uuid.NAMESPACE_URL, wsi_id)) / f"{wsi_id}.svs"
        path.parent.mkdir(parents=True, exist_ok=True)
        description = (f"Aperio Image Library v12.0.15 \r\n{size}x{size} [0,0 {size}x{size}] (256x256) Deflate/RGB"
                       "|AppMag = 40|MPP = 0.2520")
        with tifffile.TiffWriter(path) as tif:
            level = image
            for i in range(3):
                tif.write(level, tile=(256, 256), compression="zlib", compressionargs={"level": 1}, photometric="rgb",
                          description=description if i == 0 else None, metadata=None, subfiletype=0 if i == 0 else 1)
                level = level[::2, ::2]
        for k in range(patches):
            x, y = (k % side) * PATCH + 32, (k // side) * PATCH + 32
            records.append({"wsi_id": wsi_id, "position": [str(x), str(y)], "caption": f"Patch {k} of slide {s}."})
    (root / "PathGen-1.6M.json").write_text(json.dumps(records))
    return root


def _jobs(root: Path) -> list[tuple[str, list[tuple[int, int]]]]:
    records = json.loads((root / "PathGen-1.6M.json").read_text())
    by_slide: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        by_slide.setdefault(r["wsi_id"], []).append((int(r["position"][0]), int(r["position"][1])))
    paths = {p.name[:-4]: p for p in (root / "slides").rglob("*.svs")}
    return [(str(paths[w]), pos) for w, pos in sorted(by_slide.items())]


def _read_only(job: tuple[str, list[tuple[int, int]]]) -> int:
    import openslide

    path, positions = job
    slide = openslide.OpenSlide(path)
    total = 0
    for x, y in positions:
        total += int(np.asarray(slide.read_region((x, y), 0, (PATCH, PATCH)).convert("RGB"))[0, 0, 0])
    slide.close()
    return len(positions)


def _cut_encode(job: tuple[str, list[tuple[int, int]]], out: str) -> int:
    import openslide

    from pathenhanceds.images import png_rgb8

    path, positions = job
    slide = openslide.OpenSlide(path)
    stem = Path(path).name[:-4]
    for x, y in positions:  # PathGen's own script: one PNG file per patch, named <wsi_id>_<x>_<y>.png
        data = png_rgb8(np.asarray(slide.read_region((x, y), 0, (PATCH, PATCH)))[:, :, :3].copy())
        (Path(out) / f"{stem}_{x}_{y}.png").write_bytes(data)
    slide.close()
    return len(positions)


def run_pool(fn, root: Path, num_proc: int) -> float:
    jobs = _jobs(root)
    start = time.perf_counter()
    with mp.get_context("fork").Pool(num_proc) as pool:
        done = sum(pool.map(fn, jobs, chunksize=1))
    assert done == sum(len(p) for _, p in jobs)
    return time.perf_counter() - start


def run_build(root: Path, out: Path, num_proc: int, executor: str = "local") -> tuple[float, str]:
    from pathenhanceds import build

    start = time.perf_counter()
    result = build({"pathgen": root}, out, num_proc=num_proc, executor=executor, overwrite=True,
                   options={"pathgen_validation_fraction": 0.0, "pathgen_test_fraction": 0.0})
    return time.perf_counter() - start, result.digest


def run_ray(root: Path, out: Path, cpus: int) -> tuple[float, str]:
    """A ray build on an already started local Ray of `cpus` CPUs (start-up measured apart)."""
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        return run_build(root, out, cpus, executor="ray")
    finally:
        ray.shutdown()


def ray_startup() -> float:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.get(ray.remote(lambda: 1).remote())  # a first task: workers really up
    elapsed = time.perf_counter() - start
    ray.shutdown()
    return elapsed


def peak_rss(root: Path, out: Path, num_proc: int) -> tuple[float, float]:
    """(driver, largest worker) peak RSS in MB of a separate build process."""
    code = (
        "import resource, sys; from pathenhanceds import build; "
        f"build({{'pathgen': {str(root)!r}}}, {str(out)!r}, num_proc={num_proc}, overwrite=True); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    text = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return int(text[-2]) / 1024, int(text[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--patches", type=int, default=32, help="patches per slide")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS at S and 4S slides")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pathgen_"))
    try:
        root = write_slides(work / "src", args.slides, args.patches)
        n = args.slides * args.patches
        limit = run_pool(_read_only, root, args.num_proc)
        (work / "pool_out").mkdir()
        pool = run_pool(functools.partial(_cut_encode, out=str(work / "pool_out")), root, args.num_proc)
        ours, digest = run_build(root, work / "out_local", args.num_proc)
        print(f"P5 PathGen: {args.slides} slides x {args.patches} patches of {PATCH}x{PATCH} px (PNG), "
              f"{args.num_proc} processes")
        print(f"  limit (OpenSlide read only): {n / limit:8.1f} patches/s")
        print(f"  plain multiprocessing.Pool : {n / pool:8.1f} patches/s")
        print(f"  ours, local                : {n / ours:8.1f} patches/s   = {pool / ours:.2f}x the pool, "
              f"{limit / ours:.2f} of the limit")
        if not args.no_ray:
            startup = ray_startup()
            ray1, d1 = run_ray(root, work / "out_ray1", 1)
            ray2, d2 = run_ray(root, work / "out_ray2", 2)
            assert d1 == d2 == digest, "ray and local digests differ"
            print(f"  ray start-up (init + first task, paid once per build): {startup:.1f} s")
            print(f"  ours, ray 1 CPU            : {n / ray1:8.1f} patches/s (after start-up)")
            print(f"  ours, ray 2 CPUs           : {n / ray2:8.1f} patches/s (after start-up); scaling {ray1 / ray2:.2f}x")
            print("  digests: local == ray 1 == ray 2")
        if args.rss:
            big = write_slides(work / "src4", 4 * args.slides, args.patches, seed=1)
            small_rss = peak_rss(root, work / "rss_small", args.num_proc)
            big_rss = peak_rss(big, work / "rss_big", args.num_proc)
            print(f"  peak RSS, {args.slides} slides: driver {small_rss[0]:.0f} MB, largest worker {small_rss[1]:.0f} MB; "
                  f"{4 * args.slides} slides: driver {big_rss[0]:.0f} MB, largest worker {big_rss[1]:.0f} MB")
        print("  command: PYTHONPATH=. .venv/bin/python benchmarks/bench_pathgen.py "
              f"--slides {args.slides} --patches {args.patches} --num-proc {args.num_proc}{' --rss' if args.rss else ''}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
