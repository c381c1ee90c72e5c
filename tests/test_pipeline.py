"""One pipeline behind `build()` and the `PathEnhanceDS` builder: same rows, same dedup, same reports."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
import pytest
from support.raw_fixtures import bladder_entry, write_bladder, write_crc

from pathenhanceds import PathEnhanceDS, build
from pathenhanceds.errors import InputError
from pathenhanceds.images import payload_from_file
from pathenhanceds.pipeline import Pipeline
from pathenhanceds.schema import SPLITS

OPTIONS = {"bladder_validation_fraction": 0.0, "crc_train_size": 14, "crc_validation_size": 6}
PLANTED = [f"pathologist_level/tr_1/{k}" for k in range(1, 5)]  # duplicates of a CRC *test* image
REFERENCED = [f"pathologist_level/tr_2/{k}" for k in range(1, 5)]  # duplicates of a --dedup-against image


@pytest.fixture
def planted(tmp_path):
    """CRC (test: CRC-VAL-HE-7K) + bladder sources; bladder train image tr_1 is a copy of a CRC test image,
    tr_2 also lies in a benchmark folder, and one bladder entry has an invalid label (skipped)."""
    crc = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 2})
    write_crc(crc, "NCT-CRC-HE-100K", {"ADI": 20})
    train = {f"tr_{i}": bladder_entry(i % 4) for i in range(12)}
    train["tr_bad"] = {"caption": ["a caption"], "label": 7}
    bladder = write_bladder(tmp_path / "bladder", {"train": train,
                                                   "test": {f"te_{i}": bladder_entry(i % 4) for i in range(4)}})
    images = bladder / "Report" / "Images"
    (images / "tr_1.png").write_bytes(payload_from_file(crc / "CRC-VAL-HE-7K" / "ADI" / "ADI-CRC0001.tif").data)
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "copy.png").write_bytes((images / "tr_2.png").read_bytes())
    sources = {"crc": str(crc), "pathologist_level": str(bladder)}
    return {"sources": sources, "dedup_against": [str(bench)], "options": OPTIONS, "on_error": "skip", "seed": 5}


def _build_ids(out, config: str | None = None) -> dict[str, list[str]]:
    """Row ids per split as written by `build()` (config None: every config, in write order)."""
    ids: dict[str, list[str]] = {}
    pattern = f"data/{config or '*'}/*.parquet"
    tasks = ("captioning", "classification", "vqa", "conversation")
    files = sorted(out.glob(pattern), key=lambda f: (tasks.index(f.parent.name), f.name))
    for file in files:
        split = file.name.split("-", 1)[0]
        ids.setdefault(split, []).extend(pq.read_table(file, columns=["id"]).column("id").to_pylist())
    return ids


def _builder_ids(builder: PathEnhanceDS) -> dict[str, list[str]]:
    ds = builder.as_dataset()
    return {split: ds[split]["id"] for split in SPLITS if split in ds}


def test_builder_yields_exactly_the_rows_build_writes(planted, tmp_path, caplog):
    result = build(planted["sources"], tmp_path / "out", recipe="default", seed=planted["seed"],
                   options=planted["options"], on_error="skip", dedup_against=planted["dedup_against"])
    removed = {r["id"]: r["reason"] for r in result.manifest["dedup"]["removed"]}
    assert sorted(removed) == sorted(PLANTED + REFERENCED)
    assert all("test image crc/CRC-VAL-HE-7K/ADI-CRC0001 (crc)" in removed[i] for i in PLANTED)
    assert all("reference image reference:bench/copy.png" in removed[i] for i in REFERENCED)
    assert [s["record"] for s in result.manifest["skipped"]] == ["tr_bad"]

    for config in ("all", "captioning"):
        kwargs = {k: v for k, v in planted.items() if k != "sources"}
        builder = PathEnhanceDS(config_name=config, sources=planted["sources"], cache_dir=str(tmp_path / config),
                                **kwargs)
        with caplog.at_level(logging.WARNING, logger="pathenhanceds.builder"):
            builder.download_and_prepare()
        got = _builder_ids(builder)
        assert got == _build_ids(result.output, None if config == "all" else config)
        # The planted duplicate sits in another config (classification test) than the rows it removes.
        assert not set(PLANTED + REFERENCED) & set(got["train"])
        assert builder.dropped == removed
        assert [s["record"] for s in builder.skipped] == ["tr_bad"]
        assert builder.pipeline.sources == {}  # readers closed after download_and_prepare
        assert "removed 8 row(s) duplicating held-out images" in caplog.text
        assert "skipped 1 bad record(s)" in caplog.text
        caplog.clear()


def test_train_first_still_drops_duplicates_of_held_out_images(planted):
    """Asking for train before any held-out split completes the held-out index first."""
    kwargs = {k: v for k, v in planted.items() if k != "sources"}
    with Pipeline(planted["sources"], **kwargs) as pipe:
        train = [row["id"] for row in pipe.rows("captioning", "train")]
        assert train and not set(PLANTED + REFERENCED) & set(train)
        assert sorted(pipe.dropped) == sorted(PLANTED + REFERENCED)
        test = [row["id"] for row in pipe.rows("classification", "test")]  # indexed already: no second copy
        assert test == ["crc/CRC-VAL-HE-7K/ADI-CRC0000", "crc/CRC-VAL-HE-7K/ADI-CRC0001"]
        report = pipe.dedup_report()
        assert report["rows_removed_total"] == 8 and report["reference_images"] == 1
        assert sum(1 for item in pipe.items if item.id == "crc/CRC-VAL-HE-7K/ADI-CRC0001") == 1
        opened = list(pipe.sources.values())
    assert pipe.sources == {} and opened


@pytest.mark.parametrize("kwargs, message", [
    ({"num_proc": 0}, "num_proc must be an integer >= 1"),
    ({"num_proc": True}, "num_proc must be an integer >= 1"),
    ({"on_error": "ignore"}, "on_error must be 'fail' or 'skip'"),
    ({"recipe": "defualt"}, "did you mean 'default'"),
    ({"options": {"pcam_train_size": -3}}, "must be >= 0"),
    ({"options": {"bladder_validation_fraction": 1.0}}, r"must be in \[0, 1\)"),
    ({"near_dup_threshold": 99}, "threshold must be an integer"),
    ({"dedup_against": [""]}, "--dedup-against path is empty"),
])
def test_arguments_are_checked_before_anything_is_read_or_written(planted, tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        build(planted["sources"], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=message):
        Pipeline(planted["sources"], **kwargs)


@pytest.mark.parametrize("sources, message", [
    ({}, "no sources given"),
    ({"pathologist_level": ""}, "has an empty path"),
    ({"pcamm": "/somewhere"}, "unknown source 'pcamm'"),
])
def test_source_mapping_is_checked(tmp_path, sources, message):
    with pytest.raises(InputError, match=message):
        build(sources, tmp_path / "out")
    builder = PathEnhanceDS(sources=sources or None, data_dir=str(tmp_path / "nothing"),
                            cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InputError):
        builder.download_and_prepare()


def test_builder_config_and_build_defaults_agree():
    """Every `build()` pipeline argument is a builder config field with the same default."""
    import inspect

    from pathenhanceds.builder import PathEnhanceDSConfig

    defaults = {p.name: p.default for p in inspect.signature(build).parameters.values()}
    config = PathEnhanceDSConfig()
    for name in ("recipe", "seed", "on_error", "scores", "near_dup_threshold", "num_proc"):
        assert getattr(config, name) == defaults[name], name
    assert list(config.dedup_against) == list(defaults["dedup_against"]) and config.options == {}
