"""Image payloads: JPEG/PNG kept byte-identical, arrays and TIFFs encoded losslessly as PNG."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import RecordError

PNG_COMPRESS_LEVEL = 3  # lossless either way; 3 is ~3x faster than the default 6 for ~5% more bytes

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImagePayload:
    data: bytes
    format: str  # "png" | "jpeg"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def sniff_format(data: bytes) -> str | None:
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def encode_array(array: np.ndarray, *, where: str = "array") -> ImagePayload:
    """Encode an HxWx3 uint8 RGB array as PNG."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise RecordError(
            f"expected an HxWx3 uint8 RGB image, got shape {array.shape} dtype {array.dtype}",
            record=where,
            fix="pass RGB patches (N, H, W, 3) uint8",
        )
    return _png(Image.fromarray(array, mode="RGB"))


def _png(image: Image.Image) -> ImagePayload:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return ImagePayload(buffer.getvalue(), "png")


def _decode_fully(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # raises on truncated data, unlike Image.verify for some formats
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RecordError(
            f"corrupt or truncated image ({exc})",
            record=where,
            fix="re-download this file, or pass --on-error skip to leave it out",
        ) from exc
    return image


def payload_from_bytes(data: bytes, *, where: str, require_rgb_tiff: bool = True) -> ImagePayload:
    """Validate encoded image bytes. JPEG/PNG are kept as they are; TIFF/other go to PNG."""
    kind = sniff_format(data)
    image = _decode_fully(data, where)
    if kind in ("jpeg", "png"):
        return ImagePayload(data, kind)
    if kind == "tiff" and require_rgb_tiff and image.mode != "RGB":
        raise RecordError(
            f"TIFF is {image.mode}, not RGB",
            record=where,
            fix="convert the file to 8-bit RGB, or pass --on-error skip",
        )
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    return _png(image)


def payload_from_file(path, *, where: str | None = None) -> ImagePayload:
    with open(path, "rb") as handle:
        data = handle.read()
    return payload_from_bytes(data, where=where or str(path))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
