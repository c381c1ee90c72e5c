"""What raw-source readers may open, and how much of it: one place for every input limit.

Every reader goes through these helpers, so a hostile or mistaken download (a path in an annotation
file pointing at `../../etc/passwd`, a 63-byte PNG declaring 100000x100000 pixels, a FIFO named like
an image, an HDF5 file declaring 3 million patches it does not hold, a zip member inflating to GiBs)
ends as an `InputError`/`RecordError` naming the file, the record and the fix: never a traceback,
a hang, a read outside the source folder or an unbounded allocation.

The limits are a frozen `Limits`; the process-wide one is `current()`. Change it with
`configure(max_image_pixels=...)` or temporarily with `with using(follow_symlinks=False): build(...)`;
a `BuildContext` carries the limits of its build (`BuildContext(limits=...)`) and hands them to the
readers. Defaults are listed in docs/input_safety.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .errors import InputError, RecordError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limits:
    """Input limits and the symlink policy; every field is documented in docs/input_safety.md."""

    # Symlinks the user placed in their own download folder are followed; False makes each one a record error.
    follow_symlinks: bool = True
    # Pixels (width x height) an image may declare; checked from the header before decoding.
    # Pillow's own bomb threshold: a decoded RGB image of this size takes about 256 MB.
    max_image_pixels: int = 89_478_485
    max_image_bytes: int = 256 * MiB  # one encoded image: file, zip member (inflated) or parquet cell
    max_json_bytes: int = 2 * GiB  # one annotation JSON file
    max_json_depth: int = 100  # nesting of arrays/objects (the real files nest 5 deep)
    max_json_int_digits: int = 100  # digits of one JSON integer (tweet ids have 19)
    max_jsonl_line_bytes: int = 1 * MiB  # one line of a hydrated OpenPath JSONL
    max_pickle_bytes: int = 1 * GiB  # one PathVQA pickle
    max_csv_field_bytes: int = 128 * KiB  # one CSV field (Python's own default)
    max_folder_depth: int = 32  # folder levels below a source folder (the real layouts use 4)
    max_hdf5_chunk_bytes: int = 256 * MiB  # one HDF5 chunk, decoded
    max_hdf5_expansion: float = 1100.0  # declared bytes / stored bytes of an HDF5 dataset (deflate tops out at ~1032)
    max_hdf5_block_bytes: int = 64 * MiB  # pixels read from HDF5 at once (bounds memory per worker)
    max_gunzip_bytes: int = 32 * GiB  # one expanded .h5.gz (the real PCam train x is 7.2 GB)
    max_gunzip_ratio: float = 200.0  # expanded / compressed size, enforced once the output passes 64 MiB
    max_parquet_row_group_bytes: int = 2 * GiB  # one parquet row group, uncompressed

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "follow_symlinks":
                if not isinstance(value, bool):
                    raise InputError(f"limit follow_symlinks must be True or False, not {value!r}",
                                     fix="pass follow_symlinks=True or False")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InputError(f"limit {f.name} must be a positive number, not {value!r}",
                                 fix=f"pass a positive {f.name} (default {f.default})")

    def replace(self, **changes: Any) -> Limits:
        """A copy with some limits changed (unknown names are refused)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InputError(f"unknown limit(s) {', '.join(unknown)}",
                             fix=f"use one of: {', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)


DEFAULT = Limits()
_current = DEFAULT


def current() -> Limits:
    """The process-wide limits (inherited by build worker processes)."""
    return _current


def configure(limits: Limits | None = None, **changes: Any) -> Limits:
    """Set the process-wide limits: `configure(max_image_pixels=50_000_000)`; returns the previous ones."""
    global _current
    previous = _current
    base = limits or _current
    _current = base.replace(**changes) if changes else base
    return previous


@contextlib.contextmanager
def using(limits: Limits | None = None, **changes: Any) -> Iterator[Limits]:
    """Temporarily change the process-wide limits: `with using(follow_symlinks=False): build(...)`."""
    previous = configure(limits, **changes)
    try:
        yield _current
    finally:
        configure(previous)


_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]+")


def clean_message(text: object) -> str:
    """An exception text without memory addresses (`<_io.BytesIO object at 0x7f...>`), so reports are
    reproducible, and without lone surrogates, so it can be written as UTF-8."""
    return _ADDRESS.sub("", str(text)).encode("utf-8", "backslashreplace").decode("utf-8")


# ------------------------------------------------------------------------------------------ paths


def _escapes(rel: str) -> str | None:
    """Why a path taken from an input file may not be used, or None."""
    if not rel.strip():
        return "is empty"
    if "\x00" in rel:
        return "contains a NUL byte"
    if rel.startswith(("\\\\", "//")):
        return "is a UNC/network path"
    if re.match(r"^[A-Za-z]:", rel):
        return "has a drive letter"
    if rel.startswith(("/", "\\")):
        return "is absolute"
    return None


def inside(root: Path, base: Path, rel: str, *, file: object, record: object, what: str = "path",
           limits: Limits | None = None, area: str = "source folder") -> Path:
    """`base / rel` for a path read from an input file, refused unless it stays inside `root` lexically.

    `rel` is relative to `base` (a folder inside `root`); backslashes count as separators. Raises
    `RecordError` naming the file, the record and the offending path.
    """
    fix = f"write the {what} relative to its folder, without '..', inside the {area}"
    why = _escapes(rel)
    if why is None:
        joined = os.path.normpath(os.path.join(os.fspath(base), *PurePosixPath(rel.replace("\\", "/")).parts))
        root_text = os.path.normpath(os.fspath(root))
        if os.path.commonpath([root_text, joined]) != root_text:
            why = f"points outside the {area}"
        elif joined == root_text:
            why = f"names the {area} itself, not a file"
    if why is not None:
        raise RecordError(f"{what} {rel!r} {why}", file=file, record=record, fix=fix)
    path = Path(joined)
    if not (limits or current()).follow_symlinks:
        check_no_symlinks(path, root, file=file, record=record)
    return path


def check_no_symlinks(path: Path, root: Path, *, file: object = None, record: object = None,
                      error: type[InputError] = RecordError) -> None:
    """Refuse a symlink anywhere between `root` (excluded) and `path` (the no-follow policy)."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return
    current_path = root
    for part in parts:
        current_path = current_path / part
        try:
            if stat.S_ISLNK(os.lstat(current_path).st_mode):
                raise error(f"{current_path} is a symbolic link, and symlinks are not followed", file=file or path,
                            record=record, fix="copy the file into the source folder, or drop --no-follow-symlinks")
        except FileNotFoundError:
            return


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: Path, *, file: object = None, record: object = None, error: type[InputError] = RecordError,
                  limits: Limits | None = None, root: Path | None = None, what: str = "file") -> os.stat_result:
    """`os.stat` of `path`, refused unless it is a regular file (missing, dangling/looping symlink, FIFO, ...)."""
    limits = limits or current()
    fix = "replace it with the downloaded file, or pass --on-error skip" if error is RecordError else \
        "replace it with the downloaded file"
    if not limits.follow_symlinks and root is not None:
        check_no_symlinks(path, root, file=file, record=record, error=error)
    try:
        info = os.stat(path) if limits.follow_symlinks else os.lstat(path)
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise error(f"{what} {'is a dangling symbolic link' if dangling else 'is missing'}", file=file or path,
                    record=record, fix=fix) from None
    except OSError as exc:
        reason = "is a symbolic link loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise error(f"{what} {reason}", file=file or path, record=record, fix=fix) from None
    if stat.S_ISLNK(info.st_mode):
        raise error(f"{what} is a symbolic link, and symlinks are not followed", file=file or path, record=record,
                    fix="copy the file into the source folder, or drop --no-follow-symlinks")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} is {_kind(info.st_mode)}, not a regular file", file=file or path, record=record, fix=fix)
    return info


def is_regular(path: Path, limits: Limits | None = None) -> bool:
    """Whether `path` is a regular file under the symlink policy (never blocks, never raises)."""
    try:
        check_regular(path, limits=limits)
    except InputError:
        return False
    return True


def open_regular(path: Path, *, file: object = None, record: object = None, error: type[InputError] = RecordError,
                 limits: Limits | None = None, root: Path | None = None, what: str = "file") -> IO[bytes]:
    """Open a regular file for reading without ever blocking (a FIFO is refused, not waited on)."""
    limits = limits or current()
    check_regular(path, file=file, record=record, error=error, limits=limits, root=root, what=what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not limits.follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"{what} cannot be opened ({exc.strerror})", file=file or path, record=record,
                    fix="check its permissions, or pass --on-error skip") from None
    info = os.fstat(fd)  # the file may have been swapped since the stat above
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{what} is {_kind(info.st_mode)}, not a regular file", file=file or path, record=record,
                    fix="replace it with the downloaded file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: Path, *, max_bytes: int, limit_name: str, file: object = None, record: object = None,
                 error: type[InputError] = RecordError, limits: Limits | None = None, root: Path | None = None,
                 what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes` (the limit `limit_name`)."""
    with open_regular(path, file=file, record=record, error=error, limits=limits, root=root, what=what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise error(f"{what} has {size} bytes, over the limit of {max_bytes} ({limit_name})", file=file or path,
                        record=record, fix=f"check the file; raise limits.{limit_name} if it is genuine")
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{what} cannot be read ({exc.strerror})", file=file or path, record=record,
                        fix="re-download it") from None
    if len(data) > max_bytes:
        raise error(f"{what} grew past the limit of {max_bytes} bytes ({limit_name}) while being read",
                    file=file or path, record=record, fix="do not change the sources during a build")
    return data


def iter_lines(handle: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) of a binary file; a line longer than `max_bytes` comes as None, without being kept."""
    lineno = 0
    while True:
        line = handle.readline(max_bytes + 1)
        if not line:
            return
        lineno += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := handle.readline(1 * MiB)) and not rest.endswith(b"\n"):
                pass
            yield lineno, None
            continue
        yield lineno, line


def read_zip_member(archive: Any, name: str, *, file: object, record: object, limits: Limits | None = None) -> bytes:
    """One zip member inflated up to `max_image_bytes` (declared size checked first, then streamed with a cap)."""
    import zipfile
    import zlib

    limits = limits or current()
    cap = limits.max_image_bytes
    fix = "re-download the archive, or pass --on-error skip"
    try:
        info = archive.getinfo(name)
        if info.file_size > cap:
            raise RecordError(f"zip member {name!r} declares {info.file_size} bytes, over the limit of {cap} "
                              "(max_image_bytes)", file=file, record=record, fix=fix)
        chunks, total = [], 0
        with archive.open(info) as member:
            while chunk := member.read(min(1 * MiB, cap + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > cap:
                    raise RecordError(f"zip member {name!r} inflates past the limit of {cap} bytes (max_image_bytes)",
                                      file=file, record=record, fix=fix)
        return b"".join(chunks)
    except RecordError:
        raise
    except (zipfile.BadZipFile, zlib.error, KeyError, OSError, EOFError, RuntimeError, NotImplementedError,
            ValueError) as exc:
        raise RecordError(f"cannot read zip member {name!r} ({clean_message(exc)})", file=file, record=record,
                          fix=fix) from None


# ------------------------------------------------------------------------------------------ folders


def walk_files(root: Path, *, limits: Limits | None = None, suffixes: set[str] | None = None,
               name: str | None = None) -> list[Path]:
    """Files below `root`, sorted; iterative (no RecursionError), loop-safe and depth-limited.

    Symlinked folders are entered only when symlinks are followed, each real folder once. Entries
    that are not regular files are listed too when their name matches (a directory named `x.tif` or
    `name`, a FIFO), so the reader reports them instead of silently dropping them; hidden entries
    (".*") are ignored.
    """
    limits = limits or current()
    if not root.is_dir():
        return []
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            info = os.stat(folder)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise InputError(f"cannot list folder ({exc.strerror})", file=folder,
                             fix="check the folder's permissions") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=limits.follow_symlinks)
            except OSError:
                is_dir = False
            named_like_a_file = entry.name == name or bool(suffixes and entry.name.lower().endswith(tuple(suffixes)))
            if is_dir and not named_like_a_file:
                if depth + 1 > limits.max_folder_depth:
                    raise InputError(f"folders nest more than {limits.max_folder_depth} levels deep (max_folder_depth)",
                                     file=path, fix="point the source at the downloaded folder itself, or remove "
                                     "the deep folders")
                stack.append((path, depth + 1))
                continue
            if name is not None and entry.name != name:
                continue
            if suffixes is not None and Path(entry.name).suffix.lower() not in suffixes:
                continue
            found.append(path)
    return sorted(found)


# ------------------------------------------------------------------------------------------ images


ALLOWED_IMAGE_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP")


def open_image_header(data: bytes, *, file: object = None, record: object = None,
                      limits: Limits | None = None) -> Any:
    """A lazily opened PIL image whose declared size passed the pixel limit (nothing decoded yet)."""
    from PIL import Image, UnidentifiedImageError

    limits = limits or current()
    fix = "re-download this file, or pass --on-error skip to leave it out"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            image = Image.open(io.BytesIO(data), formats=ALLOWED_IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise RecordError(f"image declares too many pixels ({clean_message(exc)})", file=file, record=record,
                          fix="check the file; raise limits.max_image_pixels if it is genuine") from None
    except UnidentifiedImageError:
        raise RecordError(f"not a readable image ({', '.join(ALLOWED_IMAGE_FORMATS)})", file=file, record=record,
                          fix=fix) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise RecordError(f"corrupt image header ({clean_message(exc)})", file=file, record=record, fix=fix) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise RecordError(f"image declares a size of {width}x{height} pixels", file=file, record=record, fix=fix)
    if width * height > limits.max_image_pixels:
        raise RecordError(f"image declares {width}x{height} = {width * height} pixels, over the limit of "
                          f"{limits.max_image_pixels} (max_image_pixels)", file=file, record=record,
                          fix="check the file; raise limits.max_image_pixels if it is genuine")
    return image


def check_pixels(height: int, width: int, *, file: object = None, record: object = None,
                 error: type[InputError] = RecordError, limits: Limits | None = None) -> None:
    """Refuse an array image with no pixels or with more than `max_image_pixels`."""
    limits = limits or current()
    if height <= 0 or width <= 0:
        raise error(f"image has a size of {width}x{height} pixels", file=file, record=record,
                    fix="pass images with at least one pixel")
    if height * width > limits.max_image_pixels:
        raise error(f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{limits.max_image_pixels} (max_image_pixels)", file=file, record=record,
                    fix="check the file; raise limits.max_image_pixels if it is genuine")


# ------------------------------------------------------------------------------------------ HDF5


def h5_dataset(handle: Any, name: str, *, file: Path, limits: Limits | None = None) -> Any:
    """`handle[name]`, refused unless it is a plain dataset stored in this file with believable sizes.

    Refuses external links, soft links, groups, external raw storage, virtual datasets, chunks over
    `max_hdf5_chunk_bytes`, unwritten chunks (they would read back as fill-value patches) and
    declared sizes that the stored bytes cannot hold (`max_hdf5_expansion`).
    """
    import h5py
    import numpy as np

    limits = limits or current()
    fix = f"pass the original PCam {name} file"
    link = handle.get(name, getlink=True)
    if link is None:
        raise InputError(f"HDF5 file has no dataset {name!r} (has {sorted(handle.keys())})", file=file, fix=fix)
    if not isinstance(link, h5py.HardLink):
        raise InputError(f"{name!r} is a {type(link).__name__}, not a dataset stored in this file", file=file,
                         fix=f"{fix}; links to other files are never followed")
    obj = handle[name]
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{name!r} is a {type(obj).__name__}, not a dataset", file=file, fix=fix)
    if obj.external:
        raise InputError(f"{name!r} keeps its data in external files ({len(obj.external)}), which are never read",
                         file=file, fix=fix)
    if obj.is_virtual:
        raise InputError(f"{name!r} is a virtual dataset (data in other files), which is never read", file=file, fix=fix)
    if obj.dtype.kind not in "biuf" or obj.dtype.itemsize > 8:
        raise InputError(f"{name!r} has dtype {obj.dtype}, not numbers", file=file, fix=fix)
    declared = int(np.prod(obj.shape, dtype=np.float64)) * obj.dtype.itemsize if obj.shape else obj.dtype.itemsize
    stored = obj.id.get_storage_size()
    file_size = os.path.getsize(handle.filename)
    if stored > file_size:
        raise InputError(f"{name!r} claims {stored} stored bytes, more than the file's {file_size}", file=file,
                         fix="the file is truncated or corrupt; re-download it")
    if obj.chunks is not None:
        chunk_bytes = int(np.prod(obj.chunks)) * obj.dtype.itemsize
        if chunk_bytes > limits.max_hdf5_chunk_bytes:
            raise InputError(f"{name!r} has chunks of {chunk_bytes} bytes, over the limit of "
                             f"{limits.max_hdf5_chunk_bytes} (max_hdf5_chunk_bytes)", file=file, fix=fix)
        expected = int(np.prod([-(-s // c) for s, c in zip(obj.shape, obj.chunks, strict=True)]))
        written = obj.id.get_num_chunks() if declared else 0
        if written < expected:
            raise InputError(f"{name!r} declares shape {obj.shape} but only {written} of its {expected} chunks "
                             "were ever written (the rest would read back as blank patches)", file=file,
                             fix="the file is incomplete; re-download it")
    elif declared and stored < declared:
        raise InputError(f"{name!r} declares shape {obj.shape} ({declared} bytes) but stores only {stored} bytes",
                         file=file, fix="the file is incomplete; re-download it")
    if declared > limits.max_hdf5_expansion * max(stored, 1) and declared > 1 * MiB:
        raise InputError(f"{name!r} declares {declared} bytes from {stored} stored bytes (more than "
                         f"{limits.max_hdf5_expansion:g}x, max_hdf5_expansion)", file=file, fix=fix)
    return obj


# ------------------------------------------------------------------------------------------ text


def is_valid_text(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (JSON and pickles can carry lone surrogates that parquet refuses)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
