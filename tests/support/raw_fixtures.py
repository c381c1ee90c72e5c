"""Tiny native-format copies of each raw source for format tests.

Pixels encode identity: patch i of PCam has every pixel of channel 0 = label * 200 + split * 10 + (i % 10),
channel 1 = i // 256, channel 2 = i % 256, so label alignment can be checked from the image alone.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CRC_CODES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")


_PCAM_SPLITS = {"train": 0, "valid": 1, "test": 2}


def pcam_pixels(i: int, label: int, size: int = 8, split: str = "train") -> np.ndarray:
    value = np.array([label * 200 + _PCAM_SPLITS[split] * 10 + i % 10, i // 256, i % 256], np.uint8)
    return np.broadcast_to(value, (size, size, 3)).copy()


def decode_pcam(image: Image.Image) -> tuple[int, int]:
    """(index, label) from a fixture patch."""
    r, g, b = np.asarray(image.convert("RGB"))[0, 0].tolist()
    return g * 256 + b, int(r >= 200)


def write_pcam(folder: Path, labels: dict[str, list[int]], gz: bool = False, size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, ys in labels.items():
        x = np.stack([pcam_pixels(i, y, size, split) for i, y in enumerate(ys)])
        base = folder / f"camelyonpatch_level_2_split_{split}"
        with h5py.File(f"{base}_x.h5", "w") as f:
            f.create_dataset("x", data=x)
        with h5py.File(f"{base}_y.h5", "w") as f:
            f.create_dataset("y", data=np.array(ys, np.uint8).reshape(-1, 1, 1, 1))
        if gz:
            for kind in ("x", "y"):
                src = Path(f"{base}_{kind}.h5")
                with open(src, "rb") as fin, gzip.open(f"{src}.gz", "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                src.unlink()
    return folder


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def write_image_parquet(path: Path, images: list[bytes], **columns) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"image": [{"bytes": b, "path": None} for b in images], **columns})
    pq.write_table(table, path, row_group_size=3)
    return path


def crc_pixels(code_index: int, n: int, subset: str = "") -> np.ndarray:
    value = np.array([code_index * 20, n % 256, len(subset)], np.uint8)
    return np.broadcast_to(value, (8, 8, 3)).copy()


def write_crc(root: Path, subset: str, per_class: dict[str, int]) -> Path:
    for code, n in per_class.items():
        d = root / subset / code
        d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.fromarray(crc_pixels(CRC_CODES.index(code), k, subset), "RGB").save(d / f"{code}-{subset[:3]}{k:04d}.tif")
    return root


def write_bladder(root: Path, entries: dict[str, dict[str, dict]]) -> Path:
    """entries: subset -> name -> {"caption": [...], "label": int}; images encode the label."""
    report = root / "Report"
    (report / "Images").mkdir(parents=True, exist_ok=True)
    for subset, items in entries.items():
        (report / f"{subset}_annotation.json").write_text(json.dumps(items))
        for i, (name, value) in enumerate(items.items()):
            label = value.get("label", 0) if isinstance(value, dict) else 0
            pixel = np.array([(label % 4) * 60 if isinstance(label, int) else 0, i % 256, len(subset)], np.uint8)
            Image.fromarray(np.broadcast_to(pixel, (8, 8, 3)).copy(), "RGB").save(report / "Images" / f"{name}.png")
    return root


def bladder_entry(label: int) -> dict:
    return {"caption": [f"cap{k} for label {label}. Conclusion: x." for k in range(5)], "label": label}


def write_pvqa(root: Path, splits: dict[str, list[tuple[str, str, str]]]) -> Path:
    """splits: split -> [(image name, question, answer)]; images encode their name's number."""
    pvqa = root / "pvqa"
    for split, qas in splits.items():
        (pvqa / "qas" / split).mkdir(parents=True, exist_ok=True)
        (pvqa / "images" / split).mkdir(parents=True, exist_ok=True)
        for image, _, _ in qas:
            n = int(image.split("_")[-1])
            pixel = np.array([(n * 37) % 256, {"train": 10, "val": 90, "test": 170}[split], 5], np.uint8)
            (pvqa / "images" / split / f"{image}.jpg").write_bytes(jpeg_bytes(np.broadcast_to(pixel, (16, 16, 3)).copy()))
        with open(pvqa / "qas" / split / f"{split}_qa.pkl", "wb") as f:
            pickle.dump([{"image": i, "question": q, "answer": a} for i, q, a in qas], f)
    return root


def write_textbook(root: Path, items: list[tuple[str, str, str]], zip_names: list[str] | None = None) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "QA_pairs_vb.json").write_text(
        json.dumps([{"Image_ID": i, "Questions": q, "Answers": a} for i, q, a in items]))
    ids = sorted({i for i, _, _ in items})
    with zipfile.ZipFile(data / "textbook_of_pathology_image.zip", "w") as z:
        for k, image_id in enumerate(ids):
            pixel = np.array([k, 99, 99], np.uint8)
            z.writestr(f"textbook_of_pathology_image/{image_id}.jpg", jpeg_bytes(np.broadcast_to(pixel, (16, 16, 3)).copy()))
        for name in zip_names or []:
            z.writestr(name, b"x")
    return root
