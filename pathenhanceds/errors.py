"""Errors raised for bad user input. The CLI turns them into exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: says which file and record are wrong and how to fix it."""

    def __init__(self, message: str, *, file: object = None, record: object = None, fix: str | None = None):
        self.file = None if file is None else str(file)
        self.record = None if record is None else str(record)
        self.fix = fix
        parts = [message]
        if self.file is not None:
            parts.append(f"file: {self.file}")
        if self.record is not None:
            parts.append(f"record: {self.record}")
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__("\n  ".join(parts))
        self.reason = message


class RecordError(InputError):
    """A single bad record; `--on-error skip` skips it and lists it in the manifest."""
