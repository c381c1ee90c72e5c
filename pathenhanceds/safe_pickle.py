"""Unpickling untrusted files: plain data only (containers, str, bytes, numbers, bool, None)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from .errors import InputError


class _PlainDataUnpickler(pickle.Unpickler):
    """Plain containers and scalars need no globals; any global lookup means code could run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def load_plain_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return _PlainDataUnpickler(io.BufferedReader(handle), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"pickle holds something other than plain data ({exc})",
            file=path,
            fix="only the original PathVQA pickles (lists of dicts of strings) are accepted",
        ) from exc
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise InputError(f"not a readable pickle ({exc})", file=path, fix="re-download the file") from exc
