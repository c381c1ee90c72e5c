"""End to end: build → parquet + card + manifest → load_dataset; CLI errors; atomic output."""

from __future__ import annotations

import json

import datasets
import pytest
import yaml
from support.raw_fixtures import bladder_entry, write_bladder, write_crc

from pathenhanceds import PathEnhanceDS, build
from pathenhanceds.schema import FEATURES, SPLITS
from pathinsight_models.cli import main

TASK_CONFIGS = ("captioning", "classification", "vqa", "conversation")


def test_load_dataset_every_config(sample_build):
    out = str(sample_build.output)
    total = {s: 0 for s in SPLITS}
    assert set(sample_build.counts) == set(TASK_CONFIGS)  # the sample covers every task
    for config in TASK_CONFIGS:
        ds = datasets.load_dataset(out, config)
        assert set(ds) == set(sample_build.counts[config])
        assert ds["train"].features == FEATURES
        for split in ds:
            expected = sum(sample_build.counts[config][split].values())
            assert len(ds[split]) == expected
            total[split] += expected
        row = ds["train"][0]
        assert row["messages"][0]["role"] == "user"
        assert row["messages"][0]["content"][0] == {"type": "image", "text": None}
        assert row["messages"][-1]["role"] == "assistant"
        assert row["images"][0].size[0] > 0
    everything = datasets.load_dataset(out)  # `all` is the default config
    assert {s: len(everything[s]) for s in SPLITS} == total


@pytest.mark.slow
def test_streaming_round_trip(sample_build):
    out = str(sample_build.output)
    for config in (*TASK_CONFIGS, "all"):
        stream = datasets.load_dataset(out, config, split="validation", streaming=True)
        ids = [row["id"] for row in stream]
        eager = datasets.load_dataset(out, config, split="validation")
        assert ids == eager["id"] and ids


def test_card_and_manifest(sample_build):
    out = sample_build.output
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    names = [c["config_name"] for c in header["configs"]]
    assert names[0] == "all" and header["configs"][0]["default"] is True
    assert set(TASK_CONFIGS) <= set(names)
    assert "synthetic" in header["tags"] and "Synthetic data" in card
    assert "Not for clinical use" in card
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["digest"] == sample_build.digest and manifest["seed"] == 0
    assert manifest["counts"] == sample_build.counts
    pcam_inputs = manifest["inputs"]["pcam"]["entries"]
    assert {e["path"] for e in pcam_inputs} >= {"camelyonpatch_level_2_split_train_x.h5.gz"}
    assert all(len(e["md5"]) == 32 and e["size"] > 0 for e in pcam_inputs)
    assert str(out.parent) not in (out / "manifest.json").read_text()  # no local absolute paths
    assert str(out.parent) not in card


def test_generator_based_builder(sample_sources, tmp_path, sample_build):
    root = next(iter(sample_sources.values())).parent
    builder = PathEnhanceDS(config_name="captioning", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    ds = builder.as_dataset()
    expected = sample_build.counts["captioning"]
    assert {s: len(ds[s]) for s in ds} == {s: sum(v.values()) for s, v in expected.items()}
    parquet = datasets.load_dataset(str(sample_build.output), "captioning", split="train")
    assert ds["train"]["id"] == parquet["id"]
    assert ds["train"][0]["image_sha256"] == parquet[0]["image_sha256"]


@pytest.mark.slow  # worker processes
def test_num_proc_gives_the_same_digest(sample_sources, sample_build, tmp_path):
    result = build(sample_sources, tmp_path / "out", num_proc=2)
    assert result.digest == sample_build.digest


def test_cli_build_and_stats(sample_sources, tmp_path, capsys):
    root = next(iter(sample_sources.values())).parent
    out = tmp_path / "cli_out"
    assert main(["data", "build", "--sources-dir", str(root), "--output", str(out), "--pcam-train-size", "20"]) == 0
    assert "total" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["counts"]["classification"]["train"].values()) == 20 + manifest["counts"][
        "classification"]["train"]["crc"]
    assert main(["data", "stats", str(out)]) == 0
    assert "pcam" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "pcamm=/tmp"], "unknown source 'pcamm'"),
        (["--source", "pcam=/definitely/missing"], "path does not exist"),
        (["--source", "pcam={raw}/pcam", "--recipe", "default", "--pcam-train-size", "x"], None),
    ],
)
def test_cli_bad_input_exit_2_and_no_output(sample_sources, tmp_path, capsys, args, message):
    root = next(iter(sample_sources.values())).parent
    out = tmp_path / "out"
    argv = ["data", "build", "--output", str(out), *[a.format(raw=root) for a in args]]
    if message is None:  # argparse rejects a bad option value with exit code 2 as well
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    else:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "fix:" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))


def test_existing_output_needs_overwrite(sample_sources, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["data", "build", "--source", f"pcam={sample_sources['pcam']}", "--output", str(out)]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main([*argv, "--overwrite"]) == 2  # not an earlier build: --overwrite must not delete it
    assert "not an earlier" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert main(argv) == 0  # an empty folder is fine
    (out / "stale.txt").write_text("old")
    assert main([*argv, "--overwrite"]) == 0  # an earlier build is replaced
    assert not (out / "stale.txt").exists() and (out / "manifest.json").exists()


def test_failure_mid_build_leaves_nothing(tmp_path):
    root = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 3, "MUS": 3})
    bad = root / "CRC-VAL-HE-7K" / "MUS" / "MUS-CRC0001.tif"
    bad.write_bytes(bad.read_bytes()[:40])
    out = tmp_path / "out"
    assert main(["data", "build", "--source", f"crc={root}", "--recipe", "paper", "--output", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_on_error_skip_lists_bad_records(tmp_path):
    root = write_crc(tmp_path / "crc", "CRC-VAL-HE-7K", {"ADI": 3, "MUS": 3})
    bad = root / "CRC-VAL-HE-7K" / "MUS" / "MUS-CRC0001.tif"
    bad.write_bytes(bad.read_bytes()[:40])
    bladder = write_bladder(tmp_path / "bl", {"train": {"a": bladder_entry(1), "b": {"caption": 3, "label": 1}}})
    result = build({"crc": root, "pathologist_level": bladder}, tmp_path / "out", recipe="paper", on_error="skip")
    skipped = result.manifest["skipped"]
    assert {s["record"] for s in skipped} == {"crc/CRC-VAL-HE-7K/MUS-CRC0001", "b"}
    assert all(not s["file"].startswith("/") for s in skipped)
    assert result.counts["classification"]["train"]["crc"] == 5
    card = (result.output / "README.md").read_text()
    assert "2 record(s) were skipped" in card and "MUS-CRC0001" in card


def test_two_builds_in_same_named_folders_do_not_share_load_dataset_cache(sample_sources, sample_build, tmp_path):
    """datasets keys its cache on the folder name; our card's dataset_info makes the key content-dependent."""
    small = build({"pcam": sample_sources["pcam"]}, tmp_path / sample_build.output.name,
                  options={"pcam_train_size": 10})
    assert small.output.name == sample_build.output.name
    ds = datasets.load_dataset(str(small.output), "classification", split="train")
    assert len(ds) == 10
    big = datasets.load_dataset(str(sample_build.output), "classification", split="train")
    assert len(big) == sum(sample_build.counts["classification"]["train"].values())
    info = yaml.safe_load((small.output / "README.md").read_text().split("---")[1])["dataset_info"]
    assert {i["config_name"] for i in info} == {"all", "classification"}


def test_cli_default_output_is_pathenhanceds_in_the_working_directory(sample_sources, tmp_path, monkeypatch, capsys):
    root = next(iter(sample_sources.values())).parent
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["data", "build", "--sources-dir", str(root), "--pcam-train-size", "20"]) == 0
    capsys.readouterr()
    ds = datasets.load_dataset("pathenhanceds", "captioning", split="test")  # the card's literal call
    assert len(ds) > 0 and ds[0]["task"] == "captioning"


def test_cli_refuses_to_build_into_the_package_folder(sample_sources, tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    (repo / "pathenhanceds").mkdir(parents=True)
    (repo / "pathenhanceds" / "__init__.py").write_text('"""the package"""\n')
    monkeypatch.chdir(repo)
    root = next(iter(sample_sources.values())).parent
    assert main(["data", "build", "--sources-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "it is a Python package" in err and "current directory is the PathInsight repository" in err
    assert "fix:" in err
    assert sorted(p.name for p in (repo / "pathenhanceds").iterdir()) == ["__init__.py"]
    assert sorted(p.name for p in repo.iterdir()) == ["pathenhanceds"]
