"""Hostile and mistaken raw inputs, per source: every one ends in the error contract.

Each case copies one source folder of the synthetic sample into a fresh tmp dir, corrupts it, then
reads it as a build does (records, every image, the manifest's file list) in `fail` and in `skip`
mode. Asserted for every case: the error is an `InputError`/`RecordError` whose message names the
file, the record (for record errors) and the fix; skip mode lists bad records instead of failing;
nothing outside the source folder is opened (an audit hook watches a canary folder beside it); the
source folder is unchanged byte for byte. Readers' limits live in `pathenhanceds.limits`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import pickle
import re
import shutil
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from PIL import Image

from pathenhanceds import limits
from pathenhanceds.errors import InputError, RecordError
from pathenhanceds.sample import SampleSizes, write_sample
from pathenhanceds.sources import BuildContext, get_source

SMALL = SampleSizes(pcam_train=8, pcam_valid=8, pcam_test=8, crc_val_per_class=2, crc_train_per_class=1,
                    bladder_train=4, bladder_test=2, pathvqa_images=(2, 1, 1), textbook_images=3,
                    llava_med_papers=6, openpath_tweets=6)
SOURCES = ("pcam", "crc", "pathologist_level", "pathvqa", "llava_med", "openpath")
IMAGE_SOURCES = ("crc", "pathologist_level", "pathvqa", "llava_med", "openpath")

# ---------------------------------------------------------------------------------- audit: no reads outside

_WATCHED: list[str] = []  # folder prefixes nobody may open while armed
_OPENED: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _WATCHED or not args or isinstance(args[0], int):
        return
    try:
        path = os.path.abspath(os.fsdecode(args[0]))
    except (TypeError, ValueError):
        return
    if any(path == w or path.startswith(w + os.sep) for w in _WATCHED):
        _OPENED.append(path)


sys.addaudithook(_audit)  # hooks cannot be removed; it does nothing unless a test arms it


# ---------------------------------------------------------------------------------- fixtures and runner


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    return write_sample(tmp_path_factory.mktemp("hostile") / "raw", seed=0, sizes=SMALL)


@dataclass
class Case:
    """A copy of one source folder to corrupt; `outside` is a canary folder beside it."""

    source: str
    root: Path
    outside: Path
    canary: Path
    target: Path  # one image file of a record (file-based sources)
    limits: dict[str, Any] = field(default_factory=dict)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for step in self.cleanup:
            step()


def _first_image(name: str, root: Path) -> Path:
    src = get_source(name)(root)
    recs = [r for r in src.records(BuildContext()) if r.locator[0] == "file"]
    src.close()
    return Path(recs[0].locator[1])


def make_case(pristine: dict[str, Path], tmp_path: Path, name: str) -> Case:
    root = tmp_path / "src"
    shutil.copytree(pristine[name], root, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.jpg"
    _png(8, 8, canary)
    target = _first_image(name, root) if name != "pcam" else root
    return Case(name, root, outside, canary, target)


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry below root: type and content (bytes hashed, links' targets), without following links.

    Iterative: os.walk recurses in Python 3.11 and the hostile trees are deeper than the recursion limit.
    """
    out: dict[str, str] = {}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        for entry in os.scandir(folder):
            rel = os.path.relpath(entry.path, root)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                out[rel] = "link:" + os.readlink(entry.path)
            elif stat.S_ISREG(info.st_mode):
                with open(entry.path, "rb") as handle:
                    out[rel] = hashlib.sha256(handle.read()).hexdigest()
            else:
                out[rel] = f"mode:{info.st_mode:o}"
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
    return out


def read_like_a_build(name: str, root: Path, on_error: str) -> BuildContext:
    """Records, every image and the manifest's file list, as `build` reads them."""
    ctx = BuildContext(on_error=on_error)
    src = get_source(name)(root)
    try:
        records = list(src.records(ctx))
        for record in records:
            try:
                src.load_image(record)
            except RecordError as err:
                ctx.bad_record(err)
        src.input_files()
    finally:
        src.close()
    return ctx


def check_case(case: Case, expect: str, match: str | None = None) -> None:
    """expect: "record" (skippable RecordError), "input" (whole-source InputError) or "ok"."""
    before = tree_digest(case.root)
    _WATCHED[:] = [str(case.outside)]
    _OPENED.clear()
    try:
        with limits.using(**case.limits):
            if expect == "ok":
                read_like_a_build(case.source, case.root, "fail")
            else:
                with pytest.raises(InputError) as failed:
                    read_like_a_build(case.source, case.root, "fail")
                err = failed.value
                text = str(err)
                assert err.fix and "fix: " in text and "file: " in text, text
                assert not re.search(r"at 0x[0-9a-fA-F]{6,}", text), text  # no memory addresses
                if match:
                    assert match.lower() in text.lower(), text
                if expect == "record":
                    assert isinstance(err, RecordError), text
                    assert err.record and "record: " in text, text
                    ctx = read_like_a_build(case.source, case.root, "skip")
                    assert ctx.skipped, "skip mode must list the bad record"
                    assert any(s["reason"] == err.reason for s in ctx.skipped), ctx.skipped
                    assert all(s["file"] and s["record"] for s in ctx.skipped), ctx.skipped
                else:
                    assert not isinstance(err, RecordError), f"expected a whole-source error: {text}"
                    with pytest.raises(InputError):
                        read_like_a_build(case.source, case.root, "skip")
    finally:
        _WATCHED.clear()
    assert not _OPENED, f"opened outside the source folder: {_OPENED}"
    assert tree_digest(case.root) == before, "the source folder changed"


# ---------------------------------------------------------------------------------- hostile files


def _png(width: int, height: int, path: Path | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    if (width, height) != (8, 8):  # a real PNG whose header declares another size (a "bomb")
        ihdr = struct.pack(">II", width, height) + data[24:29]
        data = data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]
    if path is not None:
        path.write_bytes(data)
    return data


def _jpeg_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def _tiff(array: np.ndarray, **kwargs: Any) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _tiff_bomb() -> bytes:
    """A ~200-byte TIFF whose tags declare 60000 x 60000 RGB pixels."""
    data = bytearray(_tiff(np.zeros((1, 1, 3), np.uint8), photometric="rgb"))
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<HHII" if kind == 4 else "<HHIH", data, entry, tag, kind, 1, 60000)
    return bytes(data)


def _gif_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 3, np.uint8), "L").save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    struct.pack_into("<HH", data, 6, 65535, 65535)  # logical screen
    desc = data.index(b",")
    struct.pack_into("<HH", data, desc + 5, 65535, 65535)  # image descriptor
    return bytes(data)


def _bmp_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 30, np.uint8)).save(buffer, format="BMP")
    data = bytearray(buffer.getvalue())
    struct.pack_into("<ii", data, 18, 90000, 90000)
    return bytes(data)


def _write(data: bytes) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        case.target.unlink()
        case.target.write_bytes(data)

    return corrupt


def _replace_with(kind: str) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        target = case.target
        target.unlink()
        if kind == "dir":
            target.mkdir()
        elif kind == "fifo":
            os.mkfifo(target)
        elif kind == "dangling":
            target.symlink_to(target.parent / "does-not-exist.jpg")
        elif kind == "loop":
            other = target.parent / f".loop-{target.name}"
            target.symlink_to(other.name)
            other.symlink_to(target.name)
        elif kind == "link_out":
            target.symlink_to(case.canary)
        elif kind == "link_in":
            copy = case.root / f".copy{target.suffix}"
            shutil.copy(case.canary if target.suffix != ".tif" else _crc_twin(case), copy)
            target.symlink_to(copy)

    return corrupt


def _crc_twin(case: Case) -> Path:
    twin = case.outside / "twin.tif"
    Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).save(twin, format="TIFF")
    return twin


def _truncate(case: Case) -> None:
    data = case.target.read_bytes()
    case.target.write_bytes(data[: len(data) // 2])


def _with_limits(corrupt: Callable[[Case], None] | None, **changes: Any) -> Callable[[Case], None]:
    def apply(case: Case) -> None:
        if corrupt:
            corrupt(case)
        case.limits.update(changes)

    return apply


def _deep_tree(case: Case, depth: int = 40) -> None:
    """Nested folders below the source, deeper than `max_folder_depth` (32)."""
    inner = {"crc": case.root / "CRC-VAL-HE-7K" / "ADI"}.get(case.source, case.root)
    # Relative to an open folder at each step: path-based mkdir/stat would cost O(depth^2).
    fd = os.open(inner, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    case.cleanup.append(lambda: _remove_deep(inner))


def _remove_deep(parent: Path) -> None:
    """Remove the `d/d/...` chain below parent (shutil.rmtree, and pytest's cleanup, recurse too deep)."""
    fd, depth = os.open(parent, os.O_RDONLY), 0
    while True:
        try:
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
        except FileNotFoundError:
            break
        os.close(fd)
        fd, depth = child, depth + 1
    for _ in range(depth):
        up = os.open("..", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        os.rmdir("d", dir_fd=up)
        fd = up
    os.close(fd)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"

IMAGE_CASES: dict[str, tuple[Callable[[Case], None], str, str | None]] = {
    "png_bomb": (_write(_png(100_000, 100_000)), "record", "pixels"),
    "jpeg_bomb": (_write(_jpeg_bomb()), "record", "pixels"),
    "tiff_bomb": (_write(_tiff_bomb()), "record", "pixels"),
    "gif_bomb": (_write(_gif_bomb()), "record", "pixels"),
    "bmp_bomb": (_write(_bmp_bomb()), "record", "pixels"),
    "truncated": (_truncate, "record", None),
    "garbage": (_write(b"\x00\x13 not an image " * 10), "record", "not a readable image"),
    "empty_file": (_write(b""), "record", None),
    "eps_disguised": (_write(EPS), "record", "not a readable image"),
    "zero_width_png": (_write(_png(0, 8)), "record", None),
    "tiff_gray16": (_write(_tiff(np.full((8, 8), 4000, np.uint16))), "record", "bits per sample"),
    "tiff_float": (_write(_tiff(np.zeros((8, 8, 3), np.float32), photometric="rgb")), "record", "image"),
    "directory": (_replace_with("dir"), "record", "directory"),
    "fifo": (_replace_with("fifo"), "record", "named pipe"),
    "dangling_symlink": (_replace_with("dangling"), "record", "dangling"),
    "symlink_loop": (_replace_with("loop"), "record", "loop"),
    "symlink_out_no_follow": (_with_limits(_replace_with("link_out"), follow_symlinks=False), "record", "symbolic link"),
    "symlink_in_no_follow": (_with_limits(_replace_with("link_in"), follow_symlinks=False), "record", "symbolic link"),
    "over_size_limit": (_with_limits(None, max_image_bytes=100), "record", "max_image_bytes"),
    "pixel_limit_lowered": (_with_limits(None, max_image_pixels=10), "record", "max_image_pixels"),
    "symlink_in_followed": (_replace_with("link_in"), "ok", None),
}


@pytest.mark.parametrize("source", IMAGE_SOURCES)
@pytest.mark.parametrize("case_name", sorted(IMAGE_CASES))
def test_hostile_image(pristine, tmp_path, source, case_name):
    corrupt, expect, match = IMAGE_CASES[case_name]
    case = make_case(pristine, tmp_path, source)
    try:
        corrupt(case)
        check_case(case, expect, match)
    finally:
        case.close()


@pytest.mark.slow
def test_deep_folder_tree_is_walked_without_recursion(pristine, tmp_path):
    """1100 levels: deeper than Python's recursion limit (Path.rglob and os.walk recurse in 3.11)."""
    case = make_case(pristine, tmp_path, "openpath")
    _deep_tree(case, depth=1100)
    try:
        check_case(case, "input", "max_folder_depth")
        case.limits["max_folder_depth"] = 5000  # the walk itself is iterative: no RecursionError
        check_case(case, "ok")
    finally:
        case.close()


# ---------------------------------------------------------------------------------- annotation files


def _json_edit(rel: str, edit: Callable[[Any, Case], Any]) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / rel
        data = edit(json.loads(path.read_text()), case)
        path.write_text(data if isinstance(data, str) else json.dumps(data))

    return corrupt


def _raw(rel: str, data: bytes | Callable[[Case], bytes]) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / rel
        content = data(case) if callable(data) else data
        path.unlink()
        path.write_bytes(content)

    return corrupt


def _special(rel: str, kind: str) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / rel
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "dangling":
            path.symlink_to(path.parent / "gone.json")

    return corrupt


def _json_file_cases(rel: str) -> dict[str, tuple[Callable[[Case], None], str, str | None]]:
    return {
        "json_nested_100000": (_raw(rel, b"[" * 100_000 + b"]" * 100_000), "input", "nest"),
        "json_nested_500": (_raw(rel, b"[" * 500 + b"]" * 500), "input", "max_json_depth"),
        "json_5001_digit_int": (_raw(rel, b"[" + b"7" * 5001 + b"]"), "input", "max_json_int_digits"),
        "json_invalid_utf8": (_raw(rel, b'{"a": "\xff\xfe"}'), "input", "not valid JSON"),
        "json_truncated": (_raw(rel, lambda c: (c.root / rel).read_bytes()[:50]), "input", "not valid JSON"),
        "json_fifo": (_special(rel, "fifo"), "input", "named pipe"),
        "json_directory": (_special(rel, "dir"), "input", "directory"),
        "json_over_size_limit": (_with_limits(None, max_json_bytes=64), "input", "max_json_bytes"),
    }


def _bladder_key(key: str) -> Callable[[Case], None]:
    def edit(data: dict[str, Any], case: Case) -> dict[str, Any]:
        name, value = next(iter(data.items()))
        data[key.format(canary=case.canary.with_suffix(""), outside=case.outside)] = value
        return data

    return _json_edit("Report/train_annotation.json", edit)


def _bladder_entry(value: Any) -> Callable[[Case], None]:
    def edit(data: dict[str, Any], case: Case) -> dict[str, Any]:
        data[next(iter(data))] = value
        return data

    return _json_edit("Report/train_annotation.json", edit)


BLADDER_CASES = {
    **_json_file_cases("Report/train_annotation.json"),
    "key_dotdot": (_bladder_key("../../../outside/canary"), "record", "outside the source folder"),
    "key_absolute": (_bladder_key("{canary}"), "record", "absolute"),
    "key_backslashes": (_bladder_key("..\\..\\..\\outside\\canary"), "record", "outside"),
    "key_drive_letter": (_bladder_key("C:\\Users\\x\\canary"), "record", "drive letter"),
    "key_unc": (_bladder_key("\\\\server\\share\\canary"), "record", "UNC"),
    "key_nul": (_bladder_key("syn\x00canary"), "record", "NUL"),
    "label_7": (_bladder_entry({"caption": ["a"], "label": 7}), "record", "label"),
    "caption_surrogate": (_bladder_entry({"caption": ["\udc80 text"], "label": 1}), "record", "surrogate"),
    "entry_not_object": (_bladder_entry([1, 2, 3]), "record", "not an object"),
    "duplicate_key": (_raw("Report/train_annotation.json",
                           b'{"a": {"caption": ["x"], "label": 1}, "a": {"caption": ["y"], "label": 1}}'),
                      "input", "duplicate key"),
}


def _pvqa_items(edit: Callable[[list[dict[str, str]], Case], Any]) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / "pvqa/qas/train/train_qa.pkl"
        items = pickle.loads(path.read_bytes())
        path.write_bytes(pickle.dumps(edit(items, case), protocol=4))

    return corrupt


def _pvqa_image(value: str) -> Callable[[Case], None]:
    def edit(items: list[dict[str, str]], case: Case) -> list[dict[str, str]]:
        items[0]["image"] = value.format(canary=case.canary.with_suffix(""))
        return items

    return _pvqa_items(edit)


_PKL = "pvqa/qas/train/train_qa.pkl"
PATHVQA_CASES = {
    **_json_file_cases("data/QA_pairs_vb.json"),
    "pickle_binbytes8_bomb": (_raw(_PKL, b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc."), "input", "bomb"),
    "pickle_binunicode8_bomb": (_raw(_PKL, b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"abc."), "input", "bomb"),
    "pickle_bytearray8_bomb": (_raw(_PKL, b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"."), "input", "bomb"),
    "pickle_frame_bomb": (_raw(_PKL, b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N."), "input", "bomb"),
    "pickle_binunicode_bomb": (_raw(_PKL, b"\x80\x02X" + struct.pack("<I", 2**31) + b"a."), "input", "bomb"),
    "pickle_global": (_raw(_PKL, b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R."), "input", "not allowed"),
    "pickle_truncated": (_raw(_PKL, lambda c: (c.root / _PKL).read_bytes()[:40]), "input", "truncated"),
    "pickle_garbage": (_raw(_PKL, b"\xff" * 64), "input", "not a pickle"),
    "pickle_fifo": (_special(_PKL, "fifo"), "input", "named pipe"),
    "pickle_over_limit": (_with_limits(None, max_pickle_bytes=10), "input", "max_pickle_bytes"),
    "pickle_image_dotdot": (_pvqa_image("../../../../outside/canary"), "record", "outside the source folder"),
    "pickle_image_absolute": (_pvqa_image("{canary}"), "record", "absolute"),
    "pickle_entry_not_dict": (_pvqa_items(lambda items, c: [7, *items]), "record", "not a dict"),
    "pickle_surrogate": (_pvqa_items(lambda items, c: [{**items[0], "question": "\udcff?"}, *items[1:]]),
                         "record", "surrogate"),
}


def _textbook_zip(build: Callable[[zipfile.ZipFile, Case], None]) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / "data" / "textbook_of_pathology_image.zip"
        path.unlink()
        with zipfile.ZipFile(path, "w") as archive:
            build(archive, case)

    return corrupt


def _zip_member_of_zeros(size: int) -> Callable[[zipfile.ZipFile, Case], None]:
    def build(archive: zipfile.ZipFile, case: Case) -> None:
        with archive.open(zipfile.ZipInfo("textbook_of_pathology_image/img_0.jpg"), "w", force_zip64=True) as member:
            for _ in range(size // (1 << 20)):
                member.write(bytes(1 << 20))
        for image_id in ("Fig.1", "Fig.2"):
            archive.writestr(f"textbook_of_pathology_image/{image_id}.jpg", case.canary.read_bytes())

    return build


PATHVQA_CASES |= {
    "zip_member_over_limit": (_with_limits(_textbook_zip(_zip_member_of_zeros(2 << 20)), max_image_bytes=1 << 20),
                              "record", "max_image_bytes"),
    "zip_corrupt": (_raw("data/textbook_of_pathology_image.zip", b"PK\x03\x04" + b"\x00" * 60), "input", "zip"),
    "zip_fifo": (_special("data/textbook_of_pathology_image.zip", "fifo"), "input", "named pipe"),
    "zip_entry_outside": (_textbook_zip(lambda a, c: a.writestr("../../outside/canary.jpg", b"x")), "input",
                          "outside its folder"),
}


_LLAVA = "instruct/llava_med_instruct_10k.json"


def _llava_image(value: str) -> Callable[[Case], None]:
    def edit(data: list[dict[str, Any]], case: Case) -> list[dict[str, Any]]:
        data[0]["image"] = value.format(canary=case.canary, outside=case.outside)
        return data

    return _json_edit(_LLAVA, edit)


def _llava_first(edit_item: Callable[[dict[str, Any]], None]) -> Callable[[Case], None]:
    def edit(data: list[dict[str, Any]], case: Case) -> list[dict[str, Any]]:
        edit_item(data[0])
        return data

    return _json_edit(_LLAVA, edit)


LLAVA_CASES = {
    **_json_file_cases(_LLAVA),
    "image_dotdot": (_llava_image("../../outside/canary.jpg"), "record", "outside the images folder"),
    "image_absolute": (_llava_image("{canary}"), "record", "absolute"),
    "image_drive_letter": (_llava_image("C:\\canary.jpg"), "record", "drive letter"),
    "image_unc": (_llava_image("\\\\host\\share\\canary.jpg"), "record", "UNC"),
    "image_not_string": (_llava_first(lambda item: item.update(image=["x.jpg"])), "record", "not a string"),
    "turn_surrogate": (_llava_first(lambda item: item["conversations"][1].update(value="\ud800")), "record",
                       "surrogate"),
    "turns_not_alternating": (_llava_first(lambda item: item["conversations"][1].update({"from": "human"})),
                              "record", "alternate"),
}


_JSONL = "openpath_hydrated.jsonl"


def _jsonl_first(edit_line: Callable[[bytes, Case], bytes]) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / _JSONL
        lines = path.read_bytes().splitlines()
        lines[0] = edit_line(lines[0], case)
        path.write_bytes(b"\n".join(lines) + b"\n")

    return corrupt


def _tweet_image(value: str) -> Callable[[Case], None]:
    def edit(line: bytes, case: Case) -> bytes:
        item = json.loads(line)
        item["image"] = value.format(canary=case.canary)
        return json.dumps(item).encode()

    return _jsonl_first(edit)


OPENPATH_CASES = {
    "image_dotdot": (_tweet_image("../outside/canary.jpg"), "record", "outside the source folder"),
    "image_dotdot_inside_first": (_tweet_image("images/../../outside/canary.jpg"), "record", "outside"),
    "image_absolute": (_tweet_image("{canary}"), "record", "absolute"),
    "image_drive_letter": (_tweet_image("C:\\images\\canary.jpg"), "record", "drive letter"),
    "image_unc": (_tweet_image("\\\\server\\share\\canary.jpg"), "record", "UNC"),
    "image_nul": (_tweet_image("images/x\x00.jpg"), "record", "NUL"),
    "line_nested_100000": (_jsonl_first(lambda line, c: b"[" * 100_000 + b"]" * 100_000), "record", "nest"),
    "line_5001_digit_id": (_jsonl_first(lambda line, c: b'{"tweet_id": ' + b"9" * 5001 + b"}"), "record", "digits"),
    "line_invalid_utf8": (_jsonl_first(lambda line, c: b'{"tweet_id": "\xff"}'), "record", "not valid JSON"),
    "line_too_long": (_jsonl_first(lambda line, c: b'{"text": "' + b"a" * (2 << 20) + b'"}'), "record",
                      "max_jsonl_line_bytes"),
    "line_surrogate": (_jsonl_first(lambda line, c: line.replace(b'"text": "', b'"text": "\\udc00')), "record",
                       "surrogate"),
    "id_csv_200kb_field": (_raw("dataframe_208K_rows.csv", b"0,Twitter,#x," + b"u" * 200_000 + b",1,2\n"),
                           "input", "max_csv_field_bytes"),
    "id_csv_fifo": (_special("dataframe_208K_rows.csv", "fifo"), "input", "named pipe"),
    "jsonl_fifo": (_special(_JSONL, "fifo"), "input", "named pipe"),
    "jsonl_directory": (_special(_JSONL, "dir"), "input", "directory"),
}


def _pcam_file(split: str, kind: str) -> str:
    return f"camelyonpatch_level_2_split_{split}_{kind}.h5"


def _h5(kind: str, build: Callable[[h5py.File, Case], None], split: str = "valid") -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / _pcam_file(split, kind)
        path.unlink()
        with h5py.File(path, "w") as handle:
            build(handle, case)

    return corrupt


def _labels(values: np.ndarray) -> Callable[[h5py.File, Case], None]:
    return lambda f, c: f.create_dataset("y", data=values)


def _external_raw(f: h5py.File, case: Case) -> None:
    raw = case.outside / "raw.bin"
    raw.write_bytes(bytes(8 * 96 * 96 * 3))
    f.create_dataset("x", shape=(8, 96, 96, 3), dtype="u1", external=[(str(raw), 0, 8 * 96 * 96 * 3)])


def _external_link(f: h5py.File, case: Case) -> None:
    with h5py.File(case.outside / "other.h5", "w") as other:
        other.create_dataset("x", data=np.zeros((8, 96, 96, 3), np.uint8))
    f["x"] = h5py.ExternalLink(str(case.outside / "other.h5"), "/x")


def _virtual(f: h5py.File, case: Case) -> None:
    with h5py.File(case.outside / "other.h5", "w") as other:
        other.create_dataset("x", data=np.zeros((8, 96, 96, 3), np.uint8))
    layout = h5py.VirtualLayout(shape=(8, 96, 96, 3), dtype="u1")
    layout[:] = h5py.VirtualSource(str(case.outside / "other.h5"), "x", shape=(8, 96, 96, 3))
    f.create_virtual_dataset("x", layout)


def _corrupt_chunk(case: Case) -> None:
    path = case.root / _pcam_file("valid", "x")
    with h5py.File(path, "r") as f:
        patches = f["x"][...]
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=patches, chunks=(1, 96, 96, 3), compression="gzip")
    with h5py.File(path, "r") as f:
        info = f["x"].id.get_chunk_info(3)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + 2)
        handle.write(b"\xff" * 64)


def _gz(kind: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / (_pcam_file("train", kind) + ".gz")
        old = path.read_bytes()
        path.unlink()
        path.write_bytes(data(old) if callable(data) else data)

    return corrupt


def _pcam_special(kind: str, what: str) -> Callable[[Case], None]:
    def corrupt(case: Case) -> None:
        path = case.root / _pcam_file("valid", kind)
        if what == "link_in":
            copy = case.root / f".copy-{kind}.h5"
            shutil.move(path, copy)
            path.symlink_to(copy)
            return
        path.unlink()
        if what == "fifo":
            os.mkfifo(path)
        elif what == "dir":
            path.mkdir()
        elif what == "dangling":
            path.symlink_to(case.root / "gone.h5")
        elif what == "loop":
            path.symlink_to(path.name)

    return corrupt


_PATCHES = np.zeros((8, 96, 96, 3), np.uint8)
PCAM_CASES = {
    "x_is_group": (_h5("x", lambda f, c: f.create_group("x")), "input", "Group"),
    "y_is_group": (_h5("y", lambda f, c: f.create_group("y")), "input", "Group"),
    "x_external_link": (_h5("x", _external_link), "input", "ExternalLink"),
    "x_soft_link": (_h5("x", lambda f, c: (f.create_dataset("real", data=_PATCHES), f.__setitem__(
        "x", h5py.SoftLink("/real")))), "input", "SoftLink"),
    "x_external_storage": (_h5("x", _external_raw), "input", "external"),
    "x_virtual": (_h5("x", _virtual), "input", "virtual"),
    "x_3M_declared_chunked": (_h5("x", lambda f, c: f.create_dataset("x", shape=(3_000_000, 96, 96, 3), dtype="u1",
                                                                    chunks=(1, 96, 96, 3))), "input", "chunks"),
    "x_declared_contiguous": (_h5("x", lambda f, c: f.create_dataset("x", shape=(1000, 96, 96, 3), dtype="u1")),
                              "input", "stores only"),
    "x_zero_size_patches": (_h5("x", lambda f, c: f.create_dataset("x", data=np.zeros((8, 0, 0, 3), np.uint8))),
                            "input", "size of 0x0"),
    "x_huge_patches": (_h5("x", lambda f, c: f.create_dataset("x", shape=(8, 100_000, 100_000, 3), dtype="u1",
                                                             chunks=(1, 64, 64, 3))), "input", "chunks"),
    "x_float": (_h5("x", lambda f, c: f.create_dataset("x", data=_PATCHES.astype(np.float32))), "input", "uint8"),
    "x_strings": (_h5("x", lambda f, c: f.create_dataset("x", data=np.array([b"a"] * 8))), "input", "dtype"),
    "x_4_channels": (_h5("x", lambda f, c: f.create_dataset("x", data=np.zeros((8, 96, 96, 4), np.uint8))),
                     "input", "expected (N, H, W, 3)"),
    "x_big_chunks": (_with_limits(_h5("x", lambda f, c: f.create_dataset("x", data=_PATCHES, chunks=(8, 96, 96, 3))),
                                  max_hdf5_chunk_bytes=1000), "input", "max_hdf5_chunk_bytes"),
    "y_label_2": (_h5("y", _labels(np.array([0, 1, 2, 0, 1, 0, 1, 0], np.uint8).reshape(8, 1, 1, 1))),
                  "record", "not 0/1"),
    "y_label_nan": (_h5("y", _labels(np.array([0, 1, np.nan, 0, 1, 0, 1, 0]))), "record", "not 0/1"),
    "y_count_mismatch": (_h5("y", _labels(np.zeros((5, 1, 1, 1), np.uint8))), "input", "labels"),
    "corrupt_chunk": (_corrupt_chunk, "record", "cannot read patch"),
    "h5_truncated": (_raw(_pcam_file("valid", "x"), lambda c: (c.root / _pcam_file("valid", "x")).read_bytes()[:3000]),
                     "input", None),
    "h5_garbage": (_raw(_pcam_file("valid", "x"), b"\x89HDF\r\n\x1a\n" + b"\x01" * 200), "input", "HDF5"),
    "h5_empty": (_raw(_pcam_file("valid", "x"), b""), "input", "HDF5"),
    "h5_fifo": (_pcam_special("x", "fifo"), "input", "named pipe"),
    "h5_directory": (_pcam_special("x", "dir"), "input", "directory"),
    "h5_dangling_symlink": (_pcam_special("y", "dangling"), "input", "dangling"),
    "h5_symlink_loop": (_pcam_special("x", "loop"), "input", "loop"),
    "h5_symlink_no_follow": (_with_limits(_pcam_special("x", "link_in"), follow_symlinks=False), "input",
                             "symbolic link"),
    "h5_symlink_followed": (_pcam_special("x", "link_in"), "ok", None),
    "gz_truncated": (_gz("x", lambda old: old[: len(old) // 2]), "input", "decompress"),
    "gz_garbage": (_gz("x", b"\x1f\x8b" + b"\x00" * 40), "input", "decompress"),
    "gz_over_limit": (_with_limits(None, max_gunzip_bytes=10_000), "input", "max_gunzip_bytes"),
    "deep_tree": (_deep_tree, "input", "max_folder_depth"),
}

for _cases in (BLADDER_CASES, PATHVQA_CASES, LLAVA_CASES, OPENPATH_CASES):
    _cases["deep_tree"] = (_deep_tree, "input", "max_folder_depth")
BLADDER_CASES["deep_tree"] = (_deep_tree, "ok", None)  # the bladder reader walks no folders
SOURCE_CASES = {"pcam": PCAM_CASES, "pathologist_level": BLADDER_CASES, "pathvqa": PATHVQA_CASES,
                "llava_med": LLAVA_CASES, "openpath": OPENPATH_CASES}
CRC_CASES: dict[str, tuple[Callable[[Case], None], str, str | None]] = {
    "deep_tree": (_deep_tree, "input", "max_folder_depth"),
    "unknown_class_folder": (lambda c: (c.root / "CRC-VAL-HE-7K" / "XYZ").mkdir(), "input", "unknown CRC class"),
}
SOURCE_CASES["crc"] = CRC_CASES


@pytest.mark.parametrize(("source", "case_name"), [(s, n) for s, cases in SOURCE_CASES.items() for n in sorted(cases)])
def test_hostile_annotation(pristine, tmp_path, source, case_name):
    corrupt, expect, match = SOURCE_CASES[source][case_name]
    case = make_case(pristine, tmp_path, source)
    try:
        corrupt(case)
        check_case(case, expect, match)
    finally:
        case.close()


def test_at_least_20_malformed_inputs_per_source():
    for source in SOURCES:
        cases = {**SOURCE_CASES[source], **(IMAGE_CASES if source in IMAGE_SOURCES else {})}
        assert len([c for c in cases.values() if c[1] != "ok"]) >= 20, source


# ---------------------------------------------------------------------------------- conversions and units


def test_rgb16_tiff_is_scaled_not_cut(tmp_path):
    from pathenhanceds.images import payload_from_bytes

    values = np.array([0, 257, 4000, 32768, 65535], np.uint16)
    array = np.stack([np.tile(values, (5, 1))] * 3, axis=-1)
    payload = payload_from_bytes(_tiff(array, photometric="rgb"), where="t")
    decoded = np.asarray(Image.open(io.BytesIO(payload.data)))
    assert decoded[0, :, 0].tolist() == [round(v * 255 / 65535) for v in values.tolist()]


def _set_tiff_tag(data: bytes, tag: int, value: int) -> bytes:
    data = bytearray(data)
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] == tag:
            struct.pack_into("<H", data, entry + 8, value)
    return bytes(data)


def test_rgb16_tiff_in_a_codec_tifffile_lacks_is_refused_with_a_fix():
    from pathenhanceds.images import payload_from_bytes

    data = _tiff(np.full((8, 8, 3), 999, np.uint16), photometric="rgb", compression="zlib")
    assert payload_from_bytes(data, where="t").format == "png"  # zlib: decoded with the standard library
    lzw = _set_tiff_tag(_tiff(np.full((8, 8, 3), 999, np.uint16), photometric="rgb"), 259, 5)  # Compression=LZW
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        with pytest.raises(RecordError, match="16-bit TIFF") as err:
            payload_from_bytes(lzw, where="t")
        assert "8-bit" in err.value.fix
    else:  # with the optional codecs the (garbage) LZW stream is a corrupt image, still a RecordError
        with pytest.raises(RecordError):
            payload_from_bytes(lzw, where="t")


def test_pickle_scanner_accepts_every_protocol(tmp_path):
    from pathenhanceds.safe_pickle import load_plain_pickle

    value = [{"image": "a", "question": "q" * 300, "answer": "x" * 70000, "n": 2**70, "f": 1.5}, None, (1, 2)]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        if protocol >= 3:  # bytes need a global (codecs.encode) below protocol 3
            value[0]["raw"] = b"y" * 70000
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        assert load_plain_pickle(path) == value


def test_path_containment_rules(tmp_path):
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    ok = limits.inside(root, root / "images", "a/../b.jpg", file="f", record="r")
    assert ok == root / "images" / "b.jpg"
    assert limits.inside(root, root / "images", "../x", file="f", record="r") == root / "x"  # still inside
    for bad in ["../../x", "/etc/passwd", "C:\\x", "c:x", "\\\\host\\s\\x", "//host/s", "../../src2/x", "", "a\x00"]:
        with pytest.raises(RecordError) as err:
            limits.inside(root, root / "images", bad, file="f.json", record="r7")
        assert "f.json" in str(err.value) and "r7" in str(err.value) and err.value.fix


def test_limits_are_validated_and_restored():
    before = limits.current()
    with limits.using(max_image_pixels=5) as lim:
        assert lim.max_image_pixels == 5 and limits.current() is lim
    assert limits.current() is before
    with pytest.raises(InputError, match="unknown limit"):
        limits.current().replace(max_pixels=1)
    with pytest.raises(InputError, match="positive"):
        limits.Limits(max_json_depth=0)
    assert BuildContext(follow_symlinks=False).limits.follow_symlinks is False


def test_card_escapes_pipes_and_newlines():
    from pathenhanceds.write.card import md_cell

    assert md_cell("a | b\nc\r\nd") == "a \\| b c d"


def test_nan_similarity_counts_as_missing(tmp_path):
    from pathenhanceds.filters.scores_file import (
        ScoreMeta,
        ScoreRow,
        ScoreTable,
        read_scores,
        select_top_k,
        write_scores,
    )

    rows = [ScoreRow(f"sha{i}", "openpath", f"t{i}", "hydrated", 0.99, s)
            for i, s in enumerate([0.3, math.nan, 0.9, 0.5])]
    path = write_scores(ScoreTable(rows, ScoreMeta("m", ("a", "b"))), tmp_path / "scores.parquet")
    table = read_scores(path)
    assert table.for_record("openpath", "t1").similarity is None

    @dataclass(frozen=True)
    class Rec:
        source: str
        record_id: str

    recs = [Rec("openpath", f"t{i}") for i in range(4)]
    assert [r.record_id for r in select_top_k(recs, table, 2).kept] == ["t2", "t3"]
    in_memory = ScoreTable(rows, ScoreMeta("m", ("a", "b")))
    assert [r.record_id for r in select_top_k(recs, in_memory, 2).kept] == ["t2", "t3"]


def test_nan_similarity_in_jsonl_is_not_a_score(pristine, tmp_path):
    from pathenhanceds.sources.openpath import parse_hydrated_line

    line = b'{"tweet_id": "1", "text": "t", "image": "i.jpg", "similarity": NaN}'
    assert "similarity" not in parse_hydrated_line(line, tmp_path / "x.jsonl", 1)


# ---------------------------------------------------------------------------------- whole builds (CLI)


def _cli(*args: str) -> int:
    from pathinsight_models.cli import main

    return main(list(args))


def test_build_skips_and_reports_hostile_records_deterministically(pristine, tmp_path, capsys):
    case = make_case(pristine, tmp_path, "crc")
    case.target.unlink()
    case.target = case.target.parent / "ADI-bad|name\nsecond line.tif"  # a pipe and a newline in the record id
    case.target.write_bytes(b"\x00\x13 not an image " * 3)  # PIL's message names a BytesIO at 0x...
    manifests = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        assert _cli("data", "build", "--source", f"crc={case.root}", "--output", str(out), "--num-proc", "1",
                    "--on-error", "skip") == 0
        manifests.append((out / "manifest.json").read_bytes())
        card = (out / "README.md").read_text()
    assert manifests[0] == manifests[1]
    skipped = json.loads(manifests[0])["skipped"]
    assert len(skipped) == 1 and not re.search(r"at 0x[0-9a-fA-F]+", skipped[0]["reason"])
    assert skipped[0]["file"].endswith(case.target.name)
    row = next(line for line in card.splitlines() if "ADI-bad" in line)
    assert "second line" in row and len(re.findall(r"(?<!\\)\|", row)) == 4  # | file | record | reason |
    capsys.readouterr()
    assert _cli("data", "build", "--source", f"crc={case.root}", "--output", str(tmp_path / "fail"),
                "--num-proc", "1") == 2
    err = capsys.readouterr().err
    assert "file:" in err and "record:" in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "fail").exists()


def test_no_follow_symlinks_flag(pristine, tmp_path, capsys):
    case = make_case(pristine, tmp_path, "openpath")
    _replace_with("link_out")(case)
    args = ["data", "build", "--source", f"openpath={case.root}", "--num-proc", "1"]
    assert _cli(*args, "--output", str(tmp_path / "followed")) == 0  # the user's own symlink is followed
    capsys.readouterr()
    assert _cli(*args, "--output", str(tmp_path / "refused"), "--no-follow-symlinks") == 2
    assert "symbolic link" in capsys.readouterr().err
    assert limits.current().follow_symlinks is True  # the flag does not leak into the process


_PEAK_SCRIPT = """
import json, os, resource, sys
from pathenhanceds import limits
from pathinsight_models.cli import main
limits.configure(**json.loads(os.environ.get("TEST_LIMITS", "{}")))
rc = main(sys.argv[1:])
main_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "peak_kib": max(main_kib, workers_kib), "main_kib": main_kib, "workers_kib": workers_kib}))
"""


def _peak(args: list[str], **limit_changes: Any) -> dict[str, Any]:
    """Exit code and peak RSS (KiB) of a CLI run in a fresh process (its workers included)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEST_LIMITS": json.dumps(limit_changes)}
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, *args], capture_output=True, text=True, env=env,
                          check=False)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr[-500:]}


@pytest.mark.slow
def test_peak_memory_stays_bounded_on_bombs(pristine, tmp_path):
    """A 1 GiB zip member, 3M declared PCam patches, pixel bombs: peak RSS near a clean build's."""
    clean = tmp_path / "clean"
    shutil.copytree(pristine["pathvqa"], clean / "pathvqa")
    shutil.copytree(pristine["pcam"], clean / "pcam")
    hostile = tmp_path / "hostile"
    shutil.copytree(clean, hostile)
    zip_path = hostile / "pathvqa/data/textbook_of_pathology_image.zip"
    with zipfile.ZipFile(zip_path) as original:
        fig2 = original.read("textbook_of_pathology_image/Fig.2.jpg")
    zip_path.unlink()
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("textbook_of_pathology_image/img_0.jpg", "w", force_zip64=True) as member:
            for _ in range(1024):
                member.write(bytes(1 << 20))  # 1 GiB of zeros, about 1 MB deflated
        archive.writestr("textbook_of_pathology_image/Fig.1.jpg", _jpeg_bomb())
        archive.writestr("textbook_of_pathology_image/Fig.2.jpg", fig2)
    _png(100_000, 100_000, hostile / "pathvqa/pvqa/images/train/train_0000.jpg")
    x = hostile / "pcam" / _pcam_file("test", "x")
    x.unlink()
    with h5py.File(x, "w") as f:
        f.create_dataset("x", shape=(3_000_000, 96, 96, 3), dtype="u1", chunks=(1, 96, 96, 3))
    base = ["data", "build", "--num-proc", "2", "--on-error", "skip", "--recipe", "paper"]  # paper: textbook too
    clean_run = _peak([*base, "--source", f"pathvqa={clean / 'pathvqa'}", "--output", str(tmp_path / "o1")])
    bombs = _peak([*base, "--source", f"pathvqa={hostile / 'pathvqa'}", "--output", str(tmp_path / "o2")])
    h5 = _peak([*base, "--source", f"pcam={hostile / 'pcam'}", "--output", str(tmp_path / "o3")])
    print("peak RSS KiB (main, workers):", {name: (run["main_kib"], run["workers_kib"]) for name, run in
                                            (("clean", clean_run), ("bombs", bombs), ("hdf5", h5))})
    assert clean_run["rc"] == 0 and bombs["rc"] == 0 and h5["rc"] == 2, (clean_run, bombs, h5)
    manifest = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    reasons = " ".join(s["reason"] for s in manifest["skipped"])
    assert "max_image_bytes" in reasons and "pixels" in reasons
    assert bombs["peak_kib"] < clean_run["peak_kib"] + 200 * 1024
    assert h5["peak_kib"] < clean_run["peak_kib"] + 200 * 1024


def test_gzip_module_is_streamed(tmp_path):
    """The .h5.gz expansion stops at the cap instead of filling the disk."""
    src = tmp_path / "pcam"
    src.mkdir()
    for kind in ("x", "y"):
        with gzip.open(src / (_pcam_file("valid", kind) + ".gz"), "wb") as out:
            out.write(bytes(5 << 20))
    with limits.using(max_gunzip_bytes=1 << 20):
        pcam = get_source("pcam")(src)
        with pytest.raises(InputError, match="max_gunzip_bytes") as err:
            list(pcam.records(BuildContext()))
        pcam.close()
    assert "fix:" in str(err.value)


def test_dedup_against_bombs_are_input_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pathenhanceds.dedup import load_reference_images

    folder = tmp_path / "bench"
    folder.mkdir()
    _png(100_000, 100_000, folder / "bomb.png")
    with pytest.raises(InputError, match="pixels") as err:
        load_reference_images(folder)
    assert "bomb.png" in str(err.value) and err.value.fix
    cell = {"bytes": _png(100_000, 100_000), "path": None}
    pq.write_table(pa.table({"image": [cell]}), tmp_path / "bench.parquet")
    with pytest.raises(InputError, match="pixels"):
        load_reference_images(tmp_path / "bench.parquet")
    (folder / "bomb.png").unlink()
    _png(8, 8, folder / "ok.png")
    os.mkfifo(folder / "pipe.png")  # never opened: no hang
    assert [item.id for item in load_reference_images(folder)] == ["reference:bench/ok.png"]
