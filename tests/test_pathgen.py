"""PathGen-1.6M from whole-slide images: slide index, patch cutting, records, splits, executors (local, Ray)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from support.wsi_fixtures import (
    corrupt_first_tile,
    gdc_path,
    pathgen_record,
    slide_pixels,
    tcga_id,
    truncate,
    write_pathgen_json,
    write_slide,
)

from pathenhanceds.errors import InputError, RecordError
from pathenhanceds.executors import (
    EXECUTORS,
    LocalExecutor,
    group_plans,
    local_pixel_digest,
)
from pathenhanceds.selection import pathgen as pathgen_plans
from pathenhanceds.selection.base import PlanInput, resolve_options
from pathenhanceds.sources.base import BuildContext
from pathenhanceds.sources.pathgen import PathGen, patient_of
from pathenhanceds.write.parquet import write_split
from pathenhanceds.wsi import Slide, build_slide_index, slide_key

SIZE = 672  # PathGen's patch size
GOOD = {1: tcga_id(1), 2: tcga_id(2), 3: tcga_id(1, slide=2)}  # slide number -> wsi_id (3: patient 1 again)
TRUNCATED, CORRUPT, ABSENT = tcga_id(4), tcga_id(5), tcga_id(6, tss="AB")


@pytest.fixture(scope="module")
def pathgen_dir(tmp_path_factory) -> Path:
    """DIR/PathGen-1.6M_sample.json + DIR/slides/<uuid>/<wsi_id>.svs: 3 good slides, a truncated one, a
    corrupt-tile one, one record per case (absent slide, out-of-bounds patch)."""
    root = tmp_path_factory.mktemp("pathgen")
    slides = root / "slides"
    for number, wsi_id in GOOD.items():
        write_slide(gdc_path(slides, wsi_id), number)
    truncate(write_slide(gdc_path(slides, TRUNCATED), 4))
    corrupt_first_tile(write_slide(gdc_path(slides, CORRUPT), 5))
    (slides / "logs").mkdir()
    (slides / "logs" / "gdc.log").write_text("log")
    (gdc_path(slides, ABSENT).parent).mkdir()
    gdc_path(slides, ABSENT).with_suffix(".svs.partial").write_bytes(b"II*\x00")  # unfinished download
    records = [
        pathgen_record(GOOD[1], 0, 0), pathgen_record(GOOD[1], 1376, 864), pathgen_record(GOOD[1], 700, 300),
        pathgen_record(GOOD[2], 256, 512), pathgen_record(GOOD[2], 1000, 0),
        pathgen_record(GOOD[3], 13, 17),
        pathgen_record(GOOD[1], 1500, 0),  # out of bounds: 1500 + 672 > 2048
        pathgen_record(TRUNCATED, 0, 0),
        pathgen_record(CORRUPT, 0, 0),  # reads the zeroed first tile
        pathgen_record(CORRUPT, 1024, 768),  # fine after reopening
        pathgen_record(ABSENT, 0, 0), pathgen_record(ABSENT, 672, 0),
    ]
    write_pathgen_json(root / "PathGen-1.6M_sample.json", records)
    (root / "svs_path_list.txt").write_text(f"path/to/GDC_DATA/TCGA-HNSC/0000/{ABSENT}.svs\n")
    return root


def _plans(root: Path, on_error: str = "skip", seed: int = 0, **options):
    source = PathGen(root)
    ctx = BuildContext(on_error=on_error)
    records = list(source.records(ctx))
    plans = pathgen_plans.plan_default(PlanInput(source, records, resolve_options(options), seed, ctx))
    return source, ctx, plans


# ------------------------------------------------------------------------------------------ slides


def test_openslide_reads_the_fixture_exactly(tmp_path):
    path = write_slide(tmp_path / "s.svs", 7, 1024, 768)
    with Slide(path) as slide:
        assert (slide.info.width, slide.info.height, slide.info.levels) == (1024, 768, 3)
        assert slide.info.vendor == "aperio" and slide.info.mpp_x == pytest.approx(0.252)
        assert np.array_equal(slide.read(300, 200, 300), slide_pixels(7, 300, 200, 300))
        with pytest.raises(RecordError, match="outside the slide") as err:
            slide.read(900, 0, 200)  # OpenSlide itself would return transparent black here
        assert err.value.file == str(path)


def test_index_walks_any_depth_skips_partial_and_logs_and_breaks_ties(tmp_path):
    root = tmp_path / "slides"
    a = write_slide(root / "u1" / "TCGA-AA-0001-01Z-00-DX1.ABC.svs", 1, 512, 512, levels=1)
    deeper = write_slide(root / "x" / "y" / "TCGA-AA-0001-01Z-00-DX1.ABC.svs", 1, 512, 512, levels=1)
    write_slide(root / "u2" / "tcga-aa-0002-01z-00-dx1.def.SVS", 2, 512, 512, levels=1)  # case differs
    (root / "u3").mkdir()
    (root / "u3" / "TCGA-AA-0003-01Z-00-DX1.GHI.svs.partial").write_bytes(b"II*\x00")
    (root / "logs").mkdir()
    (root / "logs" / "TCGA-AA-0004-01Z-00-DX1.JKL.svs").write_bytes(b"not a slide")
    (root / "u5").mkdir()
    czi = root / "u5" / "TCGA-AA-0005-01Z-00-DX1.MNO.czi"
    czi.write_bytes(b"ZISRAWFILE")
    svs5 = write_slide(root / "u6" / "sub" / "TCGA-AA-0005-01Z-00-DX1.MNO.svs", 5, 512, 512, levels=1)

    index = build_slide_index([root])
    assert index.lookup("TCGA-AA-0001-01Z-00-DX1.ABC") == a  # shallowest of two
    assert index.lookup("TCGA-AA-0002-01Z-00-DX1.DEF") is not None  # case-insensitive stem
    assert index.lookup("TCGA-AA-0003-01Z-00-DX1.GHI") is None  # unfinished download
    assert index.lookup("TCGA-AA-0004-01Z-00-DX1.JKL") is None  # inside logs/
    assert index.lookup("TCGA-AA-0005-01Z-00-DX1.MNO") == svs5  # an OpenSlide format beats a shallower .czi
    assert index.duplicates[slide_key(a)] == [a, deeper]
    report = {d["wsi_id"]: d for d in index.duplicate_report()}
    assert report[slide_key(a)] == {"wsi_id": slide_key(a), "used": "u1/TCGA-AA-0001-01Z-00-DX1.ABC.svs",
                                   "ignored": ["x/y/TCGA-AA-0001-01Z-00-DX1.ABC.svs"]}
    # Deterministic: a second walk gives the same choice.
    assert build_slide_index([root]).paths == index.paths


def test_unreadable_formats_are_reported_with_the_fix(tmp_path):
    czi = tmp_path / "TCGA-AA-0005-01Z-00-DX1.MNO.czi"
    czi.write_bytes(b"ZISRAWFILE" * 10)
    with pytest.raises(RecordError, match="format OpenSlide cannot read") as err:
        Slide(czi)
    assert "vips tiffsave" in err.value.fix and err.value.file == str(czi)

    odd = write_slide(tmp_path / "odd.svs", 1, 512, 512, levels=1)
    with tifffile.TiffFile(odd, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(50001)  # WebP tiles: OpenSlide refuses them
    with pytest.raises(RecordError, match="TIFF compression OpenSlide cannot decode") as err:
        Slide(odd)
    assert "vips tiffsave" in err.value.fix

    with pytest.raises(RecordError, match="missing"):
        Slide(tmp_path / "gone.svs")
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(RecordError, match="empty file"):
        Slide(empty)
    short = truncate(write_slide(tmp_path / "short.svs", 1, 512, 512))
    with pytest.raises(RecordError, match="truncated or corrupt TIFF") as err:
        Slide(short)
    assert "gdc-client" in err.value.fix


def test_a_read_error_names_the_slide_and_the_handle_is_reopened(tmp_path):
    path = corrupt_first_tile(write_slide(tmp_path / "c.svs", 3))
    with Slide(path) as slide:
        with pytest.raises(RecordError, match="cannot read the patch") as err:
            slide.read(0, 0, 64)
        assert err.value.file == str(path)
        # OpenSlide's failed handle would fail every later read; ours reopens.
        assert np.array_equal(slide.read(1024, 768, 64), slide_pixels(3, 1024, 768, 64))


# ------------------------------------------------------------------------------------------ records


def test_records_accept_both_id_keys_and_numeric_positions(tmp_path):
    write_pathgen_json(tmp_path / "PathGen-1.6M.json", [
        pathgen_record(GOOD[1], 5, 6, key="WSI_id"),
        {"wsi_id": GOOD[2], "position": [7, 8], "caption": "c"},
        {"wsi_id": GOOD[2], "position": ["x", "8"], "caption": "c"},  # bad
        pathgen_record(GOOD[1], 5, 6, caption="captioned twice"),
    ])
    ctx = BuildContext(on_error="skip")
    records = list(PathGen(tmp_path).records(ctx))
    assert [(r.record_id, r.fields["x"], r.fields["y"]) for r in records] == [
        (f"{GOOD[1]}/5_6", 5, 6), (f"{GOOD[2]}/7_8", 7, 8), (f"{GOOD[1]}/5_6#2", 5, 6)]
    assert records[0].fields["patient"] == "TCGA-ZZ-0001" == patient_of(GOOD[3])
    assert ctx.skipped[0]["record"] == "2" and "not two integers" in ctx.skipped[0]["reason"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PathGen JSON"):
        PathGen(tmp_path / "empty")


def test_patch_pixels_prove_slide_and_position(pathgen_dir):
    source, ctx, plans = _plans(pathgen_dir)
    assert len(plans) == 8  # 6 on good slides + 2 on the corrupt-tile slide (it opens; one tile fails)
    number = {wsi_id: n for n, wsi_id in GOOD.items()} | {CORRUPT: 5}
    checked = 0
    for plan in plans:
        rec = plan.record
        try:
            payload = source.load_image(rec)
        except RecordError as err:  # the zeroed tile of the corrupt slide
            assert rec.fields["wsi_id"] == CORRUPT and (rec.fields["x"], rec.fields["y"]) == (0, 0)
            assert err.file.endswith(f"{CORRUPT}.svs")
            continue
        decoded = np.asarray(Image.open(io.BytesIO(payload.data)).convert("RGB"))
        expected = slide_pixels(number[rec.fields["wsi_id"]], rec.fields["x"], rec.fields["y"], SIZE)
        assert np.array_equal(decoded, expected), plan.id
        assert rec.fields["mpp_x"] == pytest.approx(0.252) and rec.fields["slide"].endswith(".svs")
        assert plan.task == "captioning" and plan.turns[1][1] == rec.fields["caption"]
        assert plan.turns[0][1] in pathgen_plans.PATHGEN_CAPTION_QUERIES
        checked += 1
    source.close()
    assert checked == 7
    # MPP and level-0 size of every used slide are in the stats the manifest records.
    assert source.stats["slides"][GOOD[2]]["mpp_x"] == pytest.approx(0.252)
    assert source.stats["slides"][GOOD[2]]["width"] == 2048


def test_absent_slides_are_skipped_and_counted_by_project(pathgen_dir):
    source, ctx, plans = _plans(pathgen_dir)
    assert source.stats["missing_records"] == 2 and source.stats["missing_slides"] == 1
    assert source.stats["missing_by_project"] == {"TCGA-HNSC": 1}  # from PathGen's svs_path_list.txt
    assert any("2 of 12 records skipped" in n and "TCGA-HNSC (1)" in n for n in ctx.notes)
    assert not any(ABSENT in s["record"] for s in ctx.skipped)  # absent is not an error


def test_out_of_bounds_and_truncated_slides_are_record_errors_naming_the_slide(pathgen_dir):
    source, ctx, plans = _plans(pathgen_dir)
    reasons = {s["record"]: s for s in ctx.skipped}
    oob = reasons[f"{GOOD[1]}/1500_0"]
    assert "outside the slide (2048x1536" in oob["reason"] and oob["file"].endswith(f"{GOOD[1]}.svs")
    bad = reasons[f"{TRUNCATED}/0_0"]
    assert "truncated or corrupt" in bad["reason"] and bad["file"].endswith(f"{TRUNCATED}.svs")
    assert source.stats["slides_unreadable"] == 1
    with pytest.raises(RecordError, match="outside the slide"):
        _plans(pathgen_dir, on_error="fail")


def test_splits_by_patient_seeded_and_order_independent(pathgen_dir, tmp_path):
    source, ctx, plans = _plans(pathgen_dir, pathgen_validation_fraction=0.3, pathgen_test_fraction=0.3)
    by_patient: dict[str, set[str]] = {}
    for plan in plans:
        by_patient.setdefault(plan.record.fields["patient"], set()).add(plan.split)
    assert all(len(splits) == 1 for splits in by_patient.values())  # DX1 and DX2 of patient 1 together
    # Shuffled JSON: the same plans.
    shuffled = tmp_path / "shuffled"
    shutil.copytree(pathgen_dir, shuffled)
    data = json.loads((shuffled / "PathGen-1.6M_sample.json").read_text())
    random.Random(3).shuffle(data)
    write_pathgen_json(shuffled / "PathGen-1.6M_sample.json", data)
    _, _, again = _plans(shuffled, pathgen_validation_fraction=0.3, pathgen_test_fraction=0.3)
    assert [(p.id, p.split, p.turns) for p in again] == [(p.id, p.split, p.turns) for p in plans]
    # Many patients: the fractions hold, and another seed moves patients.
    patients = [f"TCGA-ZZ-{i:04d}" for i in range(3000)]
    splits = [pathgen_plans.patient_split(p, 0, 0.1, 0.1) for p in patients]
    assert 0.08 < splits.count("test") / 3000 < 0.12 and 0.08 < splits.count("validation") / 3000 < 0.12
    assert splits != [pathgen_plans.patient_split(p, 1, 0.1, 0.1) for p in patients]


def test_max_records_is_a_seeded_subset_and_plans_are_grouped_by_slide(pathgen_dir):
    source, ctx, plans = _plans(pathgen_dir, pathgen_max_records=4)
    assert 0 < len(plans) <= 4
    _, _, again = _plans(pathgen_dir, pathgen_max_records=4)
    assert [p.id for p in again] == [p.id for p in plans]
    source, ctx, plans = _plans(pathgen_dir)
    groups = group_plans(plans, {"pathgen": source})
    assert len(groups) == 4 and len({g[0].record.locator[1] for g in groups}) == 4  # one group per slide
    assert all(len({p.record.locator[1] for p in g}) == 1 for g in groups)
    assert [p for g in groups for p in g] == plans  # groups are runs: order kept


def test_jpeg_option_and_patch_size_option(pathgen_dir):
    source, ctx, plans = _plans(pathgen_dir, pathgen_image_format="jpeg", pathgen_patch_size=256)
    plan = next(p for p in plans if p.record.fields["wsi_id"] == GOOD[2])
    payload = source.load_image(plan.record)
    assert payload.format == "jpeg" and payload.data == source.load_image(plan.record).data  # deterministic
    image = np.asarray(Image.open(io.BytesIO(payload.data)).convert("RGB")).astype(int)
    expected = slide_pixels(2, plan.record.fields["x"], plan.record.fields["y"], 256).astype(int)
    assert image.shape == expected.shape and np.abs(image - expected).mean() < 3  # q95 4:4:4
    # 256-px patches fit where 672-px ones did not: the former out-of-bounds record is now planned.
    assert any(p.record.record_id == f"{GOOD[1]}/1500_0" for p in plans)
    source.close()


# ------------------------------------------------------------------------------------------ executors


def _write(rows, tmp: Path) -> tuple[str, list[dict]]:
    digest = hashlib.sha256()
    kept = []

    def keep(it):
        for row in it:
            kept.append(row)
            yield row

    write_split(keep(rows), tmp, "train", digest)
    return digest.hexdigest(), kept


def test_local_executor_is_todays_path_and_counts_errors(pathgen_dir, tmp_path):
    assert EXECUTORS.names() == ["local", "ray"]
    source, ctx, plans = _plans(pathgen_dir)
    before = len(ctx.skipped)
    executor = LocalExecutor(num_proc=1)
    digest, rows = _write(executor.rows(plans, {"pathgen": source}, ctx), tmp_path / "a")
    assert len(rows) == 7 and len(ctx.skipped) == before + 1
    assert executor.summary()["errors"] == 1
    with pytest.raises(InputError, match="unknown executor 'rya'"):
        EXECUTORS.get("rya")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (start-up costs ~7 s): 2 CPUs, no dashboard."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.distributed
def test_ray_gives_the_local_rows_and_digests_and_resumes(pathgen_dir, tmp_path, ray_local):
    from pathenhanceds.executors import RayExecutor

    source, ctx_local, plans = _plans(pathgen_dir)
    sources = {"pathgen": source}
    local_digest, local_rows = _write(LocalExecutor(num_proc=2).rows(plans, sources, ctx_local), tmp_path / "l")
    pixel_digest = local_pixel_digest(plans, sources)

    source_r, ctx_ray, plans_r = _plans(pathgen_dir)
    ray_exec = RayExecutor(workdir=tmp_path / "shards")
    ray_digest, ray_rows = _write(ray_exec.rows(plans_r, {"pathgen": source_r}, ctx_ray), tmp_path / "r")
    assert ray_digest == local_digest
    assert ray_rows == local_rows
    assert ctx_ray.skipped == ctx_local.skipped  # the corrupt tile: counted, named, not fatal
    summary = ray_exec.summary()
    assert summary["pixel_digest"] == pixel_digest and summary["groups"] == 4 and summary["resumed"] == 0
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 4  # one shard per slide
    assert not list((tmp_path / "shards").glob("*.tmp-*"))

    # A rerun reuses every finished shard and gives the same rows.
    again = RayExecutor(workdir=tmp_path / "shards")
    ctx_again = BuildContext(on_error="skip")
    digest_again, _ = _write(again.rows(plans_r, {"pathgen": source_r}, ctx_again), tmp_path / "r2")
    assert digest_again == local_digest and again.summary()["resumed"] == 4

    # on_error="fail": the first bad record stops the run.
    with pytest.raises(RecordError, match="cannot read the patch"):
        _write(RayExecutor(workdir=tmp_path / "shards2").rows(plans_r, {"pathgen": source_r},
                                                             BuildContext(on_error="fail")), tmp_path / "r3")


# ------------------------------------------------------------------------------------------ builds


@pytest.fixture(scope="module")
def sample_pathgen(tmp_path_factory) -> Path:
    """The synthetic PathGen source of `pathinsight data sample` (3 slides in gdc layout + 1 absent)."""
    from pathenhanceds.sample import SampleSizes
    from pathenhanceds.sample import pathgen as sample_pathgen_writer

    folder = tmp_path_factory.mktemp("sample") / "pathgen"
    folder.mkdir()
    sample_pathgen_writer.write(folder, np.random.default_rng(0), SampleSizes())
    return folder


@pytest.fixture(scope="module")
def local_build(sample_pathgen, tmp_path_factory):
    from pathenhanceds.build import build

    return build({"pathgen": sample_pathgen}, tmp_path_factory.mktemp("local") / "ds", seed=0)


def test_build_reports_absent_slides_and_mpp(local_build):
    manifest = local_build.manifest
    stats = manifest["inputs"]["pathgen"]["stats"]
    assert stats["missing_records"] == 4 and stats["missing_slides"] == 1 and stats["slides_used"] == 3
    assert stats["missing_by_project"] == {"TSS SY": 1}
    assert all(info["mpp_x"] in (0.252, 0.2465, 0.499) for info in stats["slides"].values())
    assert [e["path"] for e in manifest["inputs"]["pathgen"]["entries"]] == ["PathGen-1.6M_sample.json"]
    assert any("4 of 16 records skipped" in note for note in manifest["notes"])
    assert "4 of 16 records skipped" in (local_build.output / "README.md").read_text()
    assert sum(local_build.counts["captioning"][s]["pathgen"] for s in local_build.counts["captioning"]) == 12
    import pyarrow.parquet as pq

    table = pq.read_table(next((local_build.output / "data" / "captioning").glob("*.parquet")))
    row = table.slice(0, 1).to_pylist()[0]
    assert Image.open(io.BytesIO(row["images"][0]["bytes"])).size == (672, 672)
    assert row["license"] == "CC-BY-NC-4.0" and manifest["license"] == "cc-by-nc-4.0"


@pytest.mark.slow
@pytest.mark.distributed
def test_cli_build_with_ray_gives_the_local_digest(sample_pathgen, local_build, tmp_path, ray_local, capsys):
    from pathinsight_models.cli import main

    out = tmp_path / "ray_ds"
    assert main(["data", "build", "--source", f"pathgen={sample_pathgen}", "--output", str(out),
                 "--executor", "ray", "--num-proc", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["digest"] == local_build.digest
    assert not (tmp_path / ".ray_ds.shards").exists()  # task shards are removed once the build is committed
    assert main(["data", "build", "--source", f"pathgen={sample_pathgen}", "--output", str(tmp_path / "x"),
                 "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
