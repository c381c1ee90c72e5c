"""Exact/near duplicate detection across splits and sources, and leakage against external benchmarks.

Which train rows leak is decided by `HeldOutIndex` (the path the build uses); groups and summaries by
`find_duplicate_groups` / `dedup_summary`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pathenhanceds.dedup import (
    HeldOutIndex,
    ImageItem,
    dedup_summary,
    find_duplicate_groups,
    hamming,
    items_from_build,
    load_reference_images,
    near_pairs,
    perceptual_hash,
)
from pathenhanceds.errors import InputError
from pathenhanceds.images import payload_from_bytes
from pathenhanceds.schema import FEATURES, make_messages


def _texture(seed: int, size: int = 64) -> Image.Image:
    """Smooth random blobs: structured enough for a stable phash, different for every seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _item(row_id: str, split: str, data: bytes, source: str | None = None) -> ImageItem:
    return ImageItem(row_id, split, source or row_id.split("/")[0], hashlib.sha256(data).hexdigest(), data)


def leaks(items: list[ImageItem], near_threshold: int | None = None) -> dict[str, str]:
    """Train id -> reason, as the build decides it: index every held-out image, then check each train image."""
    index = HeldOutIndex(near_threshold)
    for item in items:
        if item.split != "train":
            index.add(item)
    return {i.id: reason for i in sorted(items, key=lambda i: i.id) if i.split == "train" and (reason := index.match(i))}


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    base = _texture(1)
    return {
        "a": _encode(base),
        "a_jpeg": _encode(base, "JPEG", quality=70),  # same picture, other bytes
        "a_blur": _encode(base.filter(ImageFilter.GaussianBlur(0.6))),
        "a_crop": _encode(base.crop((2, 2, 64, 64)).resize((64, 64)), "JPEG", quality=85),  # a few bits off
        "b": _encode(_texture(2)),
        "c": _encode(_texture(3)),
        "d": _encode(_texture(4)),
    }


def test_near_variants_are_close_and_others_far(images):
    h = {k: perceptual_hash(v) for k, v in images.items()}
    assert hamming(h["a"], h["a_jpeg"]) <= 2 and hamming(h["a"], h["a_blur"]) <= 2
    assert 2 <= hamming(h["a"], h["a_crop"]) <= 6
    assert min(hamming(h["a"], h[k]) for k in "bcd") > 12


def test_exact_duplicate_across_sources_and_splits_drops_train_rows(images):
    items = [
        _item("pcam/train_000001", "train", images["a"]),
        _item("crc/NCT/ADI-1", "train", images["b"]),
        _item("crc/NCT/ADI-2", "train", images["b"]),  # duplicate inside train only: kept
        _item("pathvqa/test/000003", "test", images["a"]),
        _item("pathvqa/test/000004", "test", images["c"]),
    ]
    groups = find_duplicate_groups(items)
    assert sorted((g.kind, [m.id for m in g.members]) for g in groups) == [
        ("exact", ["crc/NCT/ADI-1", "crc/NCT/ADI-2"]),
        ("exact", ["pathvqa/test/000003", "pcam/train_000001"]),
    ]
    drop = leaks(items)
    assert drop == {"pcam/train_000001": "exact duplicate of test image pathvqa/test/000003 (pathvqa)"}
    summary = dedup_summary(groups, drop, items)
    assert summary["exact_groups"] == 2 and summary["exact_groups_across_splits"] == 1
    assert summary["rows_removed"] == {"pcam": {"train": 1}} and summary["rows_removed_total"] == 1
    assert summary["rows"] == 5 and summary["images"] == 3 and summary["near_threshold"] is None


def test_near_duplicates_need_a_threshold_and_respect_it(images):
    items = [
        _item("pcam/train_1", "train", images["a_crop"]),
        _item("pcam/train_2", "train", images["d"]),
        _item("crc/val/1", "validation", images["a"]),
        _item("crc/val/2", "validation", images["b"]),
    ]
    assert leaks(items) == {}
    distance = hamming(perceptual_hash(images["a_crop"]), perceptual_hash(images["a"]))
    groups = find_duplicate_groups(items, near_threshold=6)
    assert [(g.kind, [m.id for m in g.members]) for g in groups] == [("near", ["crc/val/1", "pcam/train_1"])]
    assert leaks(items, 6) == {
        "pcam/train_1": f"near duplicate (phash distance {distance} <= 6) of validation image crc/val/1 (crc)"}
    assert leaks(items, distance - 1) == {}
    summary = dedup_summary(groups, leaks(items, 6), near_threshold=6)
    assert summary["near_groups"] == summary["near_groups_across_splits"] == 1
    assert summary["rows_removed_by_kind"] == {"near": 1}


def test_only_rows_directly_near_a_held_out_image_are_dropped():
    # train A ~ train B ~ test C, but A is 6 bits from C: with threshold 3 only B leaks.
    a, b, c = 0, 0b111, 0b111111
    items = [ImageItem("s/A", "train", "s", "1" * 64, phash=a), ImageItem("s/B", "train", "s", "2" * 64, phash=b),
             ImageItem("s/C", "test", "s", "3" * 64, phash=c)]
    groups = find_duplicate_groups(items, near_threshold=3)
    assert len(groups) == 1 and [m.id for m in groups[0].members] == ["s/A", "s/B", "s/C"]
    assert list(leaks(items, 3)) == ["s/B"]


def test_exact_reason_wins_and_closest_match_is_named():
    items = [ImageItem("s/t", "train", "s", "1" * 64, phash=0b1),
             ImageItem("s/v", "validation", "s", "2" * 64, phash=0b0),
             ImageItem("s/x", "test", "s", "1" * 64, phash=0b1)]
    assert leaks(items, 2) == {"s/t": "exact duplicate of test image s/x (s)"}


@pytest.mark.parametrize("bad", [-1, 65, 2.5, True, "4"])
def test_threshold_out_of_range_is_an_input_error(bad):
    with pytest.raises(InputError, match="threshold"):
        find_duplicate_groups([], near_threshold=bad)


@pytest.mark.parametrize("t", [0, 2, 5, 9, 12, 20, 64])
def test_banded_search_finds_exactly_the_brute_force_pairs(t):
    rng = np.random.default_rng(t)
    hashes = [int(x) for x in rng.integers(0, 2**63, 400, dtype=np.int64)]
    for i in range(60):  # plant neighbours at 0..t+1 flipped bits
        flips = rng.choice(64, size=int(rng.integers(0, min(t + 2, 64) + 1)), replace=False)
        hashes.append(hashes[i] ^ sum(1 << int(f) for f in flips))
    arr = np.array(hashes, dtype=np.uint64)
    dist = np.bitwise_count(arr[:, None] ^ arr[None, :])
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(dist <= t), strict=True) if i < j}
    assert near_pairs(hashes, t) == expected
    assert len(expected) >= 1


def test_near_search_on_fifty_thousand_images_finds_the_one_planted_pair():
    rng = np.random.default_rng(0)
    hashes = [int(x) for x in rng.integers(0, 2**63, 50_000, dtype=np.int64)]
    hashes[-1] = hashes[0] ^ 0b101
    assert near_pairs(hashes, 4) == {(0, 49_999)}


# ------------------------------------------------------------------------------------- references
def test_reference_folder_recursive_with_tiff_and_hidden_files(images, tmp_path):
    ref = tmp_path / "PathMMU"
    (ref / "sub" / "deeper").mkdir(parents=True)
    (ref / "one.png").write_bytes(images["a"])
    (ref / "sub" / "two.JPG").write_bytes(images["a_jpeg"])
    tiff = _encode(_texture(9), "TIFF")
    (ref / "sub" / "deeper" / "three.tif").write_bytes(tiff)
    (ref / ".hidden.png").write_bytes(images["b"])
    (ref / "notes.txt").write_text("not an image")
    items = load_reference_images(ref)
    assert [i.id for i in items] == ["reference:PathMMU/one.png", "reference:PathMMU/sub/deeper/three.tif",
                                     "reference:PathMMU/sub/two.JPG"]
    assert all(i.split == "reference" and i.source == "reference:PathMMU" and i.image_bytes is None for i in items)
    assert items[0].sha256 == hashlib.sha256(images["a"]).hexdigest()
    # A TIFF is stored by the builder as PNG: the reference sha must be that PNG's.
    assert items[1].sha256 == payload_from_bytes(tiff, where="t", require_rgb_tiff=False).sha256
    assert items[0].phash == perceptual_hash(images["a"])

    train = [_item("crc/NCT/TUM-1", "train", images["a"]), _item("crc/NCT/TUM-2", "train", images["c"])]
    drop = leaks([*train, *items], 4)
    assert drop == {"crc/NCT/TUM-1": "exact duplicate of reference image reference:PathMMU/one.png (reference:PathMMU)"}


def test_reference_parquet_image_columns(images, tmp_path):
    from datasets import Dataset, Features, List, Value
    from datasets import Image as HFImage

    features = Features({"question": Value("string"), "image": HFImage(), "extra": List(HFImage())})
    ds = Dataset.from_dict({"question": ["q1", "q2"], "image": [{"bytes": images["b"], "path": None}] * 2,
                            "extra": [[{"bytes": images["c"], "path": None}, {"bytes": images["d"], "path": None}], []]},
                           features=features)
    folder = tmp_path / "bench" / "data"
    folder.mkdir(parents=True)
    ds.to_parquet(str(folder / "test-00000.parquet"))
    items = load_reference_images(tmp_path / "bench")
    assert [i.id for i in items] == ["reference:bench/data/test-00000.parquet#0:image",
                                     "reference:bench/data/test-00000.parquet#0:extra/0",
                                     "reference:bench/data/test-00000.parquet#0:extra/1",
                                     "reference:bench/data/test-00000.parquet#1:image"]
    assert {i.sha256 for i in items} == {hashlib.sha256(images[k]).hexdigest() for k in "bcd"}
    assert len(load_reference_images(folder / "test-00000.parquet")) == 4


def test_reference_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(InputError, match="does not exist"):
        load_reference_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(InputError, match="no images"):
        load_reference_images(tmp_path / "empty")
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="no image column"):
        load_reference_images(tmp_path / "t.parquet")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match="cannot decode") as err:
        load_reference_images(tmp_path / "bad")
    assert "x.png" in str(err.value)


# ------------------------------------------------------------------------------------- whole build
def test_items_from_build_and_leakage_against_reference(images, tmp_path):
    from datasets import Dataset

    def row(row_id: str, data: bytes) -> dict:
        return {"id": row_id, "source": row_id.split("/")[0], "task": "vqa", "images": [{"bytes": data, "path": None}],
                "messages": make_messages([("user", "q?"), ("assistant", "a")]), "label": None, "answer_type": "open",
                "image_sha256": [hashlib.sha256(data).hexdigest()], "license": "cc0-1.0"}

    out = tmp_path / "build"
    layout = {("vqa", "train"): [row("pathvqa/train/1", images["a"]), row("pathvqa/train/2", images["b"])],
              ("classification", "train"): [row("crc/NCT/1", images["a_blur"])],
              ("classification", "test"): [row("crc/VAL/1", images["c"])]}
    for (config, split), rows in layout.items():
        (out / "data" / config).mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows, features=FEATURES).to_parquet(str(out / "data" / config / f"{split}-00000-of-00001.parquet"))
    ref = tmp_path / "benchmark"
    ref.mkdir()
    (ref / "q.jpg").write_bytes(images["a_crop"])
    items = [*items_from_build(out), *load_reference_images(ref)]
    assert {(i.id, i.split) for i in items if i.split != "reference"} == {
        ("pathvqa/train/1", "train"), ("pathvqa/train/2", "train"), ("crc/NCT/1", "train"), ("crc/VAL/1", "test")}
    groups = find_duplicate_groups(items, near_threshold=8)
    drop = leaks(items, 8)
    assert set(drop) == {"pathvqa/train/1", "crc/NCT/1"}
    assert all("reference image reference:benchmark/q.jpg" in reason for reason in drop.values())
    summary = dedup_summary(groups, drop, items, near_threshold=8, references=["benchmark"])
    assert summary["rows_removed"] == {"crc": {"train": 1}, "pathvqa": {"train": 1}}
    assert summary["reference_images"] == 1 and summary["rows"] == 4 and summary["references"] == ["benchmark"]
    with pytest.raises(InputError, match="not a PathEnhanceDS build"):
        list(items_from_build(tmp_path / "nothing"))


def test_path_type_is_accepted(tmp_path, images):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x.png").write_bytes(images["d"])
    assert len(load_reference_images(str(tmp_path / "r"))) == len(load_reference_images(Path(tmp_path / "r"))) == 1


# ------------------------------------------------------------------------------------ HeldOutIndex
def test_held_out_index_exact_match_names_the_lowest_held_out_id_whatever_the_order():
    sha = "1" * 64
    held = [ImageItem("s/z", "test", "s", sha), ImageItem("s/b", "validation", "s", sha),
            ImageItem("t/x", "reference", "reference:bench", sha)]
    for order in (held, held[::-1]):
        index = HeldOutIndex()
        for item in order:
            index.add(item)
        assert len(index) == 1
        assert index.match(ImageItem("s/t", "train", "s", sha)) == "exact duplicate of validation image s/b (s)"
        assert index.match(ImageItem("s/u", "train", "s", "2" * 64)) is None


def test_held_out_index_without_threshold_ignores_near_hashes():
    index = HeldOutIndex()
    index.add(ImageItem("s/v", "test", "s", "1" * 64, phash=0))
    assert index.match(ImageItem("s/t", "train", "s", "2" * 64, phash=0)) is None


def test_held_out_index_near_match_is_the_closest_then_lowest_id():
    index = HeldOutIndex(near_threshold=3)
    for row_id, phash in (("s/far", 0b1111), ("s/y", 0b11), ("s/x", 0b1100), ("s/self", 0)):
        index.add(ImageItem(row_id, "test", "s", row_id * 16, phash=phash))
    # distances from 0b1: far 3, y 1, x 3, self 1 -> the two at distance 1, lowest id first
    assert index.match(ImageItem("s/t", "train", "s", "t" * 64, phash=0b1)) == (
        "near duplicate (phash distance 1 <= 3) of test image s/self (s)")
    assert index.match(ImageItem("s/u", "train", "s", "u" * 64, phash=0b1111_0000_0000)) is None
    # a train image with the same bytes as a held-out image is exact, even if a closer phash exists
    assert index.match(ImageItem("s/w", "train", "s", "s/far" * 16, phash=0b11)).startswith("exact duplicate of test image s/far")


def test_held_out_index_hashes_image_bytes_when_no_phash_is_given(images):
    index = HeldOutIndex(near_threshold=2)
    index.add(_item("crc/val/1", "validation", images["a"]))
    assert index.match(_item("pcam/train_1", "train", images["a_jpeg"])).startswith(
        "near duplicate (phash distance")
    assert index.match(_item("pcam/train_2", "train", images["b"])) is None
    assert index.match(ImageItem("pcam/train_3", "train", "pcam", "9" * 64)) is None  # nothing to hash: no match


@pytest.mark.parametrize("bad", [-1, 65, 2.5, True, "4"])
def test_held_out_index_rejects_a_bad_threshold(bad):
    with pytest.raises(InputError, match="threshold"):
        HeldOutIndex(bad)
