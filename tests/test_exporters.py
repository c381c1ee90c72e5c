"""Exporters: a real (synthetic) build → LLaVA / Qwen-VL / ShareGPT files, parsed back and compared with
the rows `datasets.load_dataset` reads (text and image bytes)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from pathenhanceds.errors import InputError
from pathenhanceds.formats import FORMATS, export_dataset, image_extension, safe_name
from pathenhanceds.schema import FEATURES, make_messages, message_text


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from pathenhanceds import build
    from pathenhanceds.sample import SampleSizes, write_sample

    root = tmp_path_factory.mktemp("export")
    sizes = SampleSizes(pcam_train=6, pcam_valid=2, pcam_test=2, crc_val_per_class=1, crc_train_per_class=2,
                        bladder_train=4, bladder_test=2, pathvqa_images=(2, 1, 1), textbook_images=3)
    sources = write_sample(root / "raw", seed=0, sizes=sizes)
    return build(sources, root / "pathenhanceds", seed=0).output


def _dataset_rows(path: Path, config: str, split: str) -> dict[str, dict]:
    from datasets import Image as HFImage
    from datasets import List, load_dataset

    ds = load_dataset(str(path), config, split=split).cast_column("images", List(HFImage(decode=False)))
    return {row["id"]: row for row in ds}


def _from_llava(record: dict, root: Path):
    turns = []
    images = [record["image"]] if isinstance(record.get("image"), str) else record.get("image", [])
    for i, turn in enumerate(record["conversations"]):
        role = {"human": "user", "gpt": "assistant"}[turn["from"]]
        text = turn["value"]
        if i == 0:
            assert role == "user" and text.startswith("<image>\n") and text.count("<image>") == len(images) == 1
            text = text[len("<image>\n"):]
        else:
            assert "<image>" not in text
        turns.append((role, text))
    return record["id"], turns, [(root / p).read_bytes() for p in images]


def _from_qwen(record: dict, root: Path):
    turns, images = [], []
    for i, turn in enumerate(record["conversations"]):
        role = {"user": "user", "assistant": "assistant"}[turn["from"]]
        text = turn["value"]
        if i == 0:
            match = re.match(r"Picture 1: <img>([^<]+)</img>\n", text)
            assert match and role == "user"
            images.append(match.group(1))
            text = text[match.end():]
        assert "<img>" not in text
        turns.append((role, text))
    return record["id"], turns, [(root / p).read_bytes() for p in images]


def _from_sharegpt(record: dict, root: Path):
    turns = []
    for i, message in enumerate(record["messages"]):
        text = message["content"]
        if i == 0:
            assert message["role"] == "user" and text.startswith("<image>")
            text = text[len("<image>"):]
        assert "<image>" not in text
        turns.append((message["role"], text))
    return None, turns, [(root / p).read_bytes() for p in record["images"]]


PARSERS = {"llava": _from_llava, "qwen-vl": _from_qwen, "sharegpt": _from_sharegpt}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize(("config", "split"), [("all", "train"), ("vqa", "test")])
def test_round_trip_matches_the_dataset(built, tmp_path, fmt, config, split):
    expected = _dataset_rows(built, config, split)
    result = export_dataset(built, fmt, tmp_path / "out", config=config, split=split)
    assert result.rows == len(expected) and result.images == len(expected)
    assert result.data_file == tmp_path / "out" / f"pathenhanceds_{config}_{split}.json"
    records = json.loads(result.data_file.read_text())
    assert len(records) == len(expected)
    seen = set()
    for record in records:
        row_id, turns, images = PARSERS[fmt](record, result.output)
        if row_id is None:  # ShareGPT has no id field: match on the image file name
            row_id = next(i for i in expected if record["images"][0].startswith(f"images/{safe_name(i)}."))
        seen.add(row_id)
        row = expected[row_id]
        assert make_messages(turns) == row["messages"]
        assert [message_text(m) for m in row["messages"]] == [t for _, t in turns]
        assert images == [img["bytes"] for img in row["images"]]
    assert seen == set(expected)
    paths = [p for p in (result.output / "images").iterdir()]
    assert len(paths) == len(expected) and all(p.suffix in (".png", ".jpg") for p in paths)
    for p in paths:  # extension matches the bytes
        assert Image.open(p).format == {".png": "PNG", ".jpg": "JPEG"}[p.suffix]
    if fmt == "sharegpt":
        info = json.loads((result.output / "dataset_info.json").read_text())
        entry = info[f"pathenhanceds_{config}_{split}"]
        assert entry["file_name"] == result.data_file.name and entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "messages", "images": "images"}
        assert entry["tags"]["role_tag"] == "role" and entry["tags"]["content_tag"] == "content"
        assert entry["tags"]["user_tag"] == "user" and entry["tags"]["assistant_tag"] == "assistant"
    else:
        assert not (result.output / "dataset_info.json").exists()


def test_output_protection_and_overwrite(built, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    export_dataset(built, "llava", out, config="vqa", split="train")  # an empty folder is fine
    with pytest.raises(InputError, match="not empty") as err:
        export_dataset(built, "llava", out, config="vqa", split="validation")
    assert "--overwrite" in err.value.fix
    (out / "stale.txt").write_text("old")
    result = export_dataset(built, "sharegpt", out, config="vqa", split="validation", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json", "images", "manifest.json",
                                                     "pathenhanceds_vqa_validation.json"]
    assert result.rows == len(json.loads(result.data_file.read_text()))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folders left


def test_bad_config_split_or_folder(built, tmp_path):
    with pytest.raises(InputError, match="no config 'nope'") as err:
        export_dataset(built, "llava", tmp_path / "o", config="nope")
    assert "vqa" in err.value.fix
    with pytest.raises(InputError, match="no split 'dev'"):
        export_dataset(built, "llava", tmp_path / "o", split="dev")
    with pytest.raises(InputError, match="does not exist"):
        export_dataset(tmp_path / "missing", "llava", tmp_path / "o")
    with pytest.raises(InputError, match="unknown export format"):
        export_dataset(built, "alpaca", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def _write_dataset(root: Path, rows: list[dict]) -> Path:
    from datasets import Dataset

    (root / "data" / "vqa").mkdir(parents=True)
    Dataset.from_list(rows, features=FEATURES).to_parquet(str(root / "data" / "vqa" / "train-00000-of-00001.parquet"))
    return root


def _row(row_id: str, data: bytes, turns=(("user", "What is shown?"), ("assistant", "Tissue."))) -> dict:
    return {"id": row_id, "source": row_id.split("/")[0], "task": "vqa", "images": [{"bytes": data, "path": None}],
            "messages": make_messages(list(turns)), "label": None, "answer_type": "open",
            "image_sha256": ["0" * 64], "license": "cc0-1.0"}


def _png(color=(200, 30, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def test_failed_export_leaves_nothing_behind(tmp_path):
    data = _write_dataset(tmp_path / "ds", [_row("x/1", _png()), _row("x/2", b"definitely not an image")])
    with pytest.raises(InputError, match="not an image"):
        export_dataset(data, "llava", tmp_path / "exports" / "out", config="vqa")
    assert list((tmp_path / "exports").iterdir()) == []


def test_system_turns_placeholders_and_colliding_ids(tmp_path):
    rows = [_row("s/a/b", _png()), _row("s/a__b", _png((0, 0, 0))),
            _row("s/sys", _png(), (("system", "You are a pathologist."), ("user", "Describe."), ("assistant", "Fat.")))]
    data = _write_dataset(tmp_path / "ds", rows)
    with pytest.raises(InputError, match="LLaVA has no 'system' turn") as err:
        export_dataset(data, "llava", tmp_path / "llava", config="vqa")
    assert "sharegpt" in err.value.fix
    result = export_dataset(data, "sharegpt", tmp_path / "sg", config="vqa")
    records = json.loads(result.data_file.read_text())
    assert records[2]["messages"][0] == {"role": "system", "content": "You are a pathologist."}
    assert records[2]["messages"][1]["content"] == "<image>Describe."
    assert records[0]["images"] != records[1]["images"]  # "a/b" and "a__b" sanitise alike
    assert (result.output / records[1]["images"][0]).read_bytes() == _png((0, 0, 0))
    bad = _write_dataset(tmp_path / "ds2", [_row("s/1", _png(), (("user", "Is <image> here?"), ("assistant", "no")))])
    with pytest.raises(InputError, match="image placeholder"):
        export_dataset(bad, "llava", tmp_path / "bad", config="vqa")


def test_image_extension_sniffing():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="WEBP")
    assert image_extension(buf.getvalue()) == "webp"
    assert image_extension(_png()) == "png"
    assert safe_name("pcam/train_000001/0") == "pcam__train_000001__0"
    with pytest.raises(InputError):
        image_extension(b"nope")


def test_cli(built, tmp_path):
    from pathinsight_models.cli import main

    argv = ["data", "export", str(built), "--format", "qwen-vl", "--config", "classification", "--split",
            "validation", "--output", str(tmp_path / "q")]
    assert main(argv) == 0
    assert main(argv) == 2
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "q" / "pathenhanceds_classification_validation.json").is_file()
