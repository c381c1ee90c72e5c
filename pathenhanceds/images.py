"""Image payloads: JPEG/PNG kept byte-identical, arrays and TIFFs encoded losslessly as PNG."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import RecordError
from .limits import Limits, check_pixels, clean_message, current, open_image_header, read_regular

PNG_COMPRESS_LEVEL = 1  # zlib level: lossless either way; on patches 1 costs ~2% more bytes than 6, far less time

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImagePayload:
    """Encoded image bytes as stored in a row (PNG or JPEG), with their SHA-256."""
    data: bytes
    format: str  # "png" | "jpeg"
    # Hashed where the payload is made (a build's worker process), not in the writing process.
    sha256: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())


def sniff_format(data: bytes) -> str | None:
    """The container of encoded image bytes from its magic number: jpeg, png, tiff or None."""
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
    check_pixels(array.shape[0], array.shape[1], record=where)
    return ImagePayload(png_rgb8(array), "png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rgb8(array: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Lossless 8-bit RGB PNG with the "Up" filter on every row.

    The build spends most of its time encoding patches; one vectorised filter plus one zlib call
    is about twice as fast as PIL's per-row adaptive filtering, for the same size on tissue patches.
    """
    height, width, _ = array.shape
    rows = np.empty((height, width * 3 + 1), np.uint8)
    rows[:, 0] = 2  # filter type Up: each row minus the row above (mod 256)
    flat = np.ascontiguousarray(array).reshape(height, width * 3)
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB)
    return (_PNG_MAGIC + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))


def _png(image: Image.Image) -> ImagePayload:
    if image.mode == "RGB":
        return ImagePayload(png_rgb8(np.asarray(image)), "png")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ImagePayload(buffer.getvalue(), "png")


def _decode_fully(data: bytes, where: str, file: object = None) -> Image.Image:
    """Decode the first frame, after the header passed the pixel limit (`limits.open_image_header`)."""
    image = open_image_header(data, file=file, record=where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit was checked above
            image.load()  # raises on truncated data, unlike Image.verify for some formats
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct.error, zlib.error,
            Image.DecompressionBombError) as exc:
        raise RecordError(
            f"corrupt or truncated image ({clean_message(exc)})",
            file=file,
            record=where,
            fix="re-download this file, or pass --on-error skip to leave it out",
        ) from None
    return image


def _tiff_bits(image: Image.Image) -> tuple[int, ...]:
    bits = getattr(image, "tag_v2", {}).get(258, (8,))  # BitsPerSample
    return tuple(bits) if isinstance(bits, tuple | list) else (int(bits),)


def _rgb16_to_rgb8(data: bytes, where: str, file: object) -> np.ndarray:
    """A 16-bit-per-channel RGB TIFF scaled to 8 bits (0 -> 0, 65535 -> 255, rounded).

    Pillow keeps only the high byte; tifffile gives the real 16-bit samples. Compressions that
    tifffile cannot decode without extra codecs are refused with a fix.
    """
    import tifffile

    fix = "convert the file to 8-bit RGB (e.g. `convert in.tif -depth 8 out.tif`), or pass --on-error skip"
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            if page.dtype != np.uint16 or len(page.shape) != 3 or page.shape[-1] != 3:
                raise RecordError(f"16-bit TIFF has shape {page.shape} {page.dtype}, not height x width x RGB",
                                  file=file, record=where, fix=fix)
            array = page.asarray()
    except RecordError:
        raise
    except Exception as exc:  # tifffile raises many types (KeyError for a missing codec, ValueError, ...)
        raise RecordError(f"cannot read this 16-bit TIFF ({clean_message(exc)})", file=file, record=where,
                          fix=fix) from None
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def payload_from_bytes(data: bytes, *, where: str, require_rgb_tiff: bool = True, file: object = None) -> ImagePayload:
    """Validate encoded image bytes. JPEG/PNG are kept as they are; TIFF/other go to PNG.

    The pixel limit is checked from the header before anything is decoded. TIFFs with 16 bits per
    channel are scaled to 8 bits (not cut); other bit depths are refused.
    """
    kind = sniff_format(data)
    image = open_image_header(data, file=file, record=where)
    if kind == "tiff":
        bits = _tiff_bits(image)
        if bits == (16, 16, 16):
            return ImagePayload(png_rgb8(_rgb16_to_rgb8(data, where, file)), "png")
        if require_rgb_tiff and any(b != 8 for b in bits):
            raise RecordError(f"TIFF has {'/'.join(map(str, bits))} bits per sample; 8-bit RGB (or 16-bit RGB) "
                              "is expected", file=file, record=where,
                              fix="convert the file to 8-bit RGB, or pass --on-error skip")
    image = _decode_fully(data, where, file)
    if kind in ("jpeg", "png"):
        return ImagePayload(data, kind)
    if kind == "tiff" and require_rgb_tiff and image.mode != "RGB":
        raise RecordError(
            f"TIFF is {image.mode}, not RGB",
            file=file,
            record=where,
            fix="convert the file to 8-bit RGB, or pass --on-error skip",
        )
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    return _png(image)


def payload_from_file(path, *, where: str | None = None, root=None, limits: Limits | None = None) -> ImagePayload:
    """Read and validate an image file: regular files only (never a FIFO or a folder), size-limited.

    `root`: the source folder, for the no-follow-symlinks policy.
    """
    limits = limits or current()
    path = Path(path)
    data = read_regular(path, max_bytes=limits.max_image_bytes, limit_name="max_image_bytes", record=where,
                        limits=limits, root=None if root is None else Path(root), what="image file")
    return payload_from_bytes(data, where=where or str(path), file=path)
