"""Raw-source readers on native-format fixtures, including every bad-input case."""

from __future__ import annotations

import io
import json
import pickle
import warnings

import h5py
import numpy as np
import pytest
from PIL import Image
from support.raw_fixtures import (
    bladder_entry,
    decode_pcam,
    jpeg_bytes,
    pcam_pixels,
    png_bytes,
    write_bladder,
    write_crc,
    write_image_parquet,
    write_pcam,
    write_pvqa,
    write_textbook,
)

from pathenhanceds.errors import InputError, RecordError
from pathenhanceds.sources import BuildContext, get_source
from pathenhanceds.sources import pcam as pcam_module


def _records(name, path, **ctx):
    source = get_source(name)(path)
    context = BuildContext(**ctx)
    return source, list(source.records(context)), context


# ---- PCam ----

@pytest.mark.parametrize("gz", [False, True])
def test_pcam_h5_labels_stay_aligned_with_pixels(tmp_path, gz):
    labels = {"train": [1, 0, 0, 1, 1, 0, 1], "test": [0, 1]}
    src, recs, _ = _records("pcam", write_pcam(tmp_path, labels, gz=gz))
    assert [r.subset for r in recs] == ["train"] * 7 + ["test"] * 2
    for rec in recs:
        index, label = decode_pcam(Image.open(io.BytesIO(src.load_image(rec).data)))
        assert rec.fields["label"] == label == labels[rec.subset][index]
        assert rec.record_id == f"{rec.subset}_{index:06d}"
    src.close()


def test_pcam_parquet_mirror_bool_labels(tmp_path):
    ys = [True, False, True, True, False]
    write_image_parquet(tmp_path / "data" / "train-00000-of-00001.parquet",
                        [png_bytes(pcam_pixels(i, int(y))) for i, y in enumerate(ys)], label=ys)
    write_image_parquet(tmp_path / "data" / "valid-00000-of-00001.parquet", [png_bytes(pcam_pixels(0, 0))], label=[False])
    src, recs, _ = _records("pcam", tmp_path)
    assert [r.subset for r in recs] == ["train"] * 5 + ["valid"]
    for rec in recs[:5]:
        payload = src.load_image(rec)
        assert payload.format == "png"  # mirror bytes are kept as they are
        assert decode_pcam(Image.open(io.BytesIO(payload.data))) == (int(rec.record_id[-6:]), rec.fields["label"])


def test_pcam_wrong_keys(tmp_path):
    write_pcam(tmp_path, {"train": [0, 1]})
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_y.h5", "w") as f:
        f.create_dataset("labels", data=np.zeros((2, 1, 1, 1), np.uint8))
    with pytest.raises(InputError, match="no dataset 'y'") as err:
        _records("pcam", tmp_path)
    assert "train_y.h5" in str(err.value) and "fix:" in str(err.value)


def test_pcam_wrong_shape_and_length_mismatch(tmp_path):
    write_pcam(tmp_path, {"train": [0, 1, 1]})
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_y.h5", "w") as f:
        f.create_dataset("y", data=np.zeros((2, 1, 1, 1), np.uint8))
    with pytest.raises(InputError, match="x has 3 patches but y has 2"):
        _records("pcam", tmp_path)
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_x.h5", "w") as f:
        f.create_dataset("x", data=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"expected \(N, H, W, 3\) uint8"):
        _records("pcam", tmp_path)


def test_pcam_missing_partner_file_and_missing_path(tmp_path):
    write_pcam(tmp_path, {"train": [0]})
    (tmp_path / "camelyonpatch_level_2_split_train_y.h5").unlink()
    with pytest.raises(InputError, match="y file is missing"):
        get_source("pcam")(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        get_source("pcam")(tmp_path / "nope")


def test_pcam_full_size_md5_mismatch_warns(tmp_path, monkeypatch):
    write_pcam(tmp_path, {"valid": [0, 1, 0]})
    monkeypatch.setitem(pcam_module.FULL_SIZES, "valid", 3)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        _, _, ctx = _records("pcam", tmp_path)
    assert any("MD5 differs" in w for w in ctx.warnings)


def test_unknown_source_name():
    with pytest.raises(InputError, match="unknown source 'pcamm'") as err:
        get_source("pcamm")
    assert "pcam" in err.value.fix


# ---- CRC ----

def test_crc_folders_and_classes(tmp_path):
    write_crc(tmp_path, "CRC-VAL-HE-7K", {"ADI": 2, "TUM": 3})
    write_crc(tmp_path, "NCT-CRC-HE-100K", {"LYM": 1})
    src, recs, _ = _records("crc", tmp_path)
    assert sorted(r.subset for r in recs) == ["CRC-VAL-HE-7K"] * 5 + ["NCT-CRC-HE-100K"]
    rec = next(r for r in recs if r.fields["class_code"] == "TUM")
    payload = src.load_image(rec)
    assert payload.format == "png"  # TIFF → lossless PNG
    assert np.asarray(Image.open(io.BytesIO(payload.data)))[0, 0, 0] == 8 * 20


def test_crc_parquet_mirror(tmp_path):
    write_image_parquet(tmp_path / "data" / "CRC_VAL_HE_7K-00000-of-00001.parquet",
                        [png_bytes(np.full((4, 4, 3), i, np.uint8)) for i in range(4)], label=[0, 8, 3, 3])
    src, recs, _ = _records("crc", tmp_path)
    assert [r.fields["class_code"] for r in recs] == ["ADI", "TUM", "LYM", "LYM"]
    assert {r.subset for r in recs} == {"CRC-VAL-HE-7K"}
    assert np.asarray(Image.open(io.BytesIO(src.load_image(recs[3]).data)))[0, 0, 0] == 3


def test_crc_unknown_class_folder(tmp_path):
    write_crc(tmp_path, "CRC-VAL-HE-7K", {"ADI": 1})
    (tmp_path / "CRC-VAL-HE-7K" / "FAT").mkdir()
    with pytest.raises(InputError, match="unknown CRC class folder 'FAT'") as err:
        _records("crc", tmp_path)
    assert "ADI" in err.value.fix


def test_crc_non_rgb_and_corrupt_tiff(tmp_path):
    write_crc(tmp_path, "CRC-VAL-HE-7K", {"ADI": 1})
    Image.new("L", (8, 8)).save(tmp_path / "CRC-VAL-HE-7K" / "ADI" / "ADI-gray.tif")
    good = (tmp_path / "CRC-VAL-HE-7K" / "ADI" / "ADI-CRC0000.tif").read_bytes()
    (tmp_path / "CRC-VAL-HE-7K" / "ADI" / "ADI-trunc.tif").write_bytes(good[: len(good) // 2])
    src, recs, _ = _records("crc", tmp_path)
    by_id = {r.record_id.split("/")[-1]: r for r in recs}
    with pytest.raises(RecordError, match="not RGB") as err:
        src.load_image(by_id["ADI-gray"])
    assert "ADI-gray" in str(err.value)
    with pytest.raises(RecordError, match="corrupt or truncated"):
        src.load_image(by_id["ADI-trunc"])


# ---- Pathologist-level bladder ----

def test_bladder_reads_both_annotation_files(tmp_path):
    write_bladder(tmp_path, {"train": {"a_1": bladder_entry(1), "b_2": bladder_entry(0)},
                             "test": {"c_3": bladder_entry(2)}})
    _, recs, _ = _records("pathologist_level", tmp_path)
    assert [(r.record_id, r.subset, r.fields["label"]) for r in recs] == [
        ("a_1", "train", 1), ("b_2", "train", 0), ("c_3", "test", 2)]
    assert len(recs[0].fields["captions"]) == 5


def test_bladder_annotation_of_wrong_shape(tmp_path):
    write_bladder(tmp_path, {"train": {"a": bladder_entry(1)}})
    (tmp_path / "Report" / "train_annotation.json").write_text(json.dumps([{"caption": [], "label": 1}]))
    with pytest.raises(InputError, match="holds a JSON list") as err:
        _records("pathologist_level", tmp_path)
    assert "train_annotation.json" in str(err.value)


def test_bladder_bad_entry_fails_or_is_skipped(tmp_path):
    write_bladder(tmp_path, {"train": {"ok": bladder_entry(1), "bad": {"caption": "text", "label": 1},
                                       "badlabel": {"caption": ["x"], "label": 7}}})
    with pytest.raises(RecordError, match="'caption' is not a non-empty list") as err:
        _records("pathologist_level", tmp_path)
    assert "record: bad" in str(err.value)
    _, recs, ctx = _records("pathologist_level", tmp_path, on_error="skip")
    assert [r.record_id for r in recs] == ["ok"]
    assert [s["record"] for s in ctx.skipped] == ["bad", "badlabel"]


def test_bladder_duplicate_ids(tmp_path):
    write_bladder(tmp_path, {"train": {"a": bladder_entry(1)}})
    (tmp_path / "Report" / "train_annotation.json").write_text(
        '{"a": {"caption": ["x"], "label": 1}, "a": {"caption": ["y"], "label": 0}}')
    with pytest.raises(InputError, match="duplicate key 'a'"):
        _records("pathologist_level", tmp_path)


# ---- PathVQA ----

def test_pathvqa_pickles(tmp_path):
    write_pvqa(tmp_path, {"train": [("train_0001", "is it?", "yes"), ("train_0001", "what?", "tumor")],
                          "test": [("test_0002", "is it?", "no")]})
    src, recs, _ = _records("pathvqa", tmp_path)
    assert [(r.subset, r.fields["answer"]) for r in recs] == [("train", "yes"), ("train", "tumor"), ("test", "no")]
    payload = src.load_image(recs[2])
    assert payload.format == "jpeg"
    assert payload.data == (tmp_path / "pvqa/images/test/test_0002.jpg").read_bytes()  # byte-identical


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pathvqa_pickle_with_code_is_refused(tmp_path, capsys):
    write_pvqa(tmp_path, {"train": [("train_0001", "q", "a")]})
    with open(tmp_path / "pvqa/qas/train/train_qa.pkl", "wb") as f:
        pickle.dump([{"image": "train_0001", "question": _Evil(), "answer": "a"}], f)
    with pytest.raises(InputError, match="something other than plain data") as err:
        _records("pathvqa", tmp_path)
    assert "builtins.print" in str(err.value)
    assert "pwned" not in capsys.readouterr().out


def test_pathvqa_parquet_mirror(tmp_path):
    images = [jpeg_bytes(np.full((8, 8, 3), i * 30, np.uint8)) for i in range(3)]
    write_image_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", images,
                        question=["q0", "q1", "q2"], answer=["yes", "no", "fibrosis"])
    src, recs, _ = _records("pathvqa", tmp_path)
    assert [r.subset for r in recs] == ["val"] * 3
    assert src.load_image(recs[1]).data == images[1]


def test_pathvqa_textbook_zip_matches_fig_ids(tmp_path):
    write_textbook(tmp_path, [("img_1", "q1", "yes"), ("Fig.1", "q2", "no"), ("Fig.12", "q3", "cells")])
    src, recs, _ = _records("pathvqa", tmp_path)
    assert [r.fields["image_id"] for r in recs] == ["img_1", "Fig.1", "Fig.12"]
    assert {r.subset for r in recs} == {"textbook"}
    # Fig.1 and Fig.12 must be different images (the paper's script cut names at the first ".")
    assert src.load_image(recs[1]).sha256 != src.load_image(recs[2]).sha256


@pytest.mark.parametrize("evil", ["../outside.jpg", "/etc/passwd", "textbook_of_pathology_image/../../x.jpg"])
def test_pathvqa_zip_entry_outside_folder(tmp_path, evil):
    write_textbook(tmp_path, [("img_1", "q", "yes")], zip_names=[evil])
    with pytest.raises(InputError, match="zip entry points outside its folder") as err:
        get_source("pathvqa")(tmp_path)
    assert evil in str(err.value)


def test_pathvqa_missing_image_skip(tmp_path):
    write_pvqa(tmp_path, {"train": [("train_0001", "q", "yes"), ("train_0002", "q", "no")]})
    (tmp_path / "pvqa/images/train/train_0002.jpg").unlink()
    with pytest.raises(RecordError, match="image file is missing"):
        _records("pathvqa", tmp_path)
    _, recs, ctx = _records("pathvqa", tmp_path, on_error="skip")
    assert len(recs) == 1 and ctx.skipped[0]["record"] == "train[1]"


def test_png_encoder_is_lossless_and_standard():
    from pathenhanceds.images import encode_array

    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (7, 13, 3), (96, 96, 3)]:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        payload = encode_array(array)
        decoded = Image.open(io.BytesIO(payload.data))
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), array)
    with pytest.raises(RecordError, match="HxWx3 uint8"):
        encode_array(np.zeros((4, 4), np.uint8))
