"""Unpickling untrusted files: plain data only (containers, str, bytes, numbers, bool, None).

Before unpickling, every opcode is walked once: a length-prefixed argument (BINBYTES8,
BINUNICODE8, FRAME, ...) that declares more bytes than the file still holds is a size bomb and is
refused without allocating anything. The file itself may hold at most `max_pickle_bytes`.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

from .errors import InputError
from .limits import Limits, clean_message, current, read_regular

_LENGTH_PREFIX = {  # pickletools' markers for "the argument's length comes first": (bytes, signed)
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_FIX = "only the original PathVQA pickles (lists of dicts of strings) are accepted; re-download the file"


class _PlainDataUnpickler(pickle.Unpickler):
    """Plain containers and scalars need no globals; any global lookup means code could run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def check_lengths(data: bytes, path: Path) -> None:
    """Walk the opcodes; refuse unknown opcodes, truncation and arguments longer than the file."""
    pos, end = 0, len(data)
    while pos < end:
        op = pickletools.code2op.get(chr(data[pos]))
        if op is None:
            raise InputError(f"not a pickle: unknown opcode {data[pos]:#04x} at byte {pos}", file=path, fix=_FIX)
        pos += 1
        arg = op.arg
        if arg is not None:
            if arg.n >= 0:
                if op.name == "FRAME" and pos + 8 <= end:
                    size = int.from_bytes(data[pos:pos + 8], "little")
                    if size > end - pos - 8:
                        raise InputError(f"pickle FRAME at byte {pos - 1} declares {size} bytes but only "
                                         f"{end - pos - 8} follow (a size bomb or a truncated file)", file=path, fix=_FIX)
                pos += arg.n
            elif arg.n == pickletools.UP_TO_NEWLINE:
                for _ in range(2 if arg.name.endswith("_pair") else 1):
                    newline = data.find(b"\n", pos)
                    if newline < 0:
                        raise InputError(f"pickle is truncated inside {op.name}", file=path, fix=_FIX)
                    pos = newline + 1
            else:
                width, signed = _LENGTH_PREFIX[arg.n]
                if pos + width > end:
                    raise InputError(f"pickle is truncated inside {op.name}", file=path, fix=_FIX)
                size = int.from_bytes(data[pos:pos + width], "little", signed=signed)
                pos += width
                if size < 0 or size > end - pos:
                    raise InputError(f"pickle {op.name} at byte {pos - width - 1} declares {size} bytes but only "
                                     f"{end - pos} follow (a size bomb or a truncated file)", file=path, fix=_FIX)
                pos += size
        if pos > end:
            raise InputError(f"pickle is truncated inside {op.name}", file=path, fix=_FIX)
        if op.name == "STOP":
            return
    raise InputError("pickle is truncated (no STOP opcode)", file=path, fix=_FIX)


def load_plain_pickle(path: Path, limits: Limits | None = None) -> Any:
    """Plain data from a pickle file; anything else (globals, size bombs, corruption) is an `InputError`."""
    limits = limits or current()
    data = read_regular(path, max_bytes=limits.max_pickle_bytes, limit_name="max_pickle_bytes", error=InputError,
                        limits=limits, what="pickle")
    check_lengths(data, path)
    try:
        return _PlainDataUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InputError(f"pickle holds something other than plain data ({clean_message(exc)})", file=path,
                         fix=_FIX) from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, MemoryError,
            RecursionError) as exc:
        raise InputError(f"not a readable pickle ({type(exc).__name__}: {clean_message(exc)})", file=path,
                         fix="re-download the file") from None
