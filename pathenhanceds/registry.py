"""One registry style for every named plug-in: sources, selections, tasks, families, metrics, CLI groups.

    SOURCES = Registry("source", fix="pass --source NAME=PATH with one of: {names}")

    @SOURCES.register("pcam")          # or SOURCES.register("pcam", obj)
    class PCamSource(Source): ...

    SOURCES.get("pcam")                # unknown names are an `InputError` naming the closest match
    SOURCES.names()                    # sorted, what `list_sources()` returns

Registering a second object under a taken name is a programming error (`ValueError`), never a
silent overwrite; re-registering the very same object (a module imported twice) is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from .errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object, duplicate names refused, lookups that say what exists."""

    def __init__(self, kind: str, *, fix: str = "use one of: {names}"):
        self.kind = kind
        self._fix = fix
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Add `obj` under `name` (or use as a decorator); a different object under a taken name raises."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def add(value: T) -> T:
            current = self._items.get(name)
            if current is not None and current is not value:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = value
            return value

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered under `name`; an `InputError` with the closest names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown {self.kind} {name!r}{hint}",
                             fix=self._fix.format(names=", ".join(self.names()))) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs in name order."""
        return [(name, self._items[name]) for name in self.names()]

    def values(self) -> list[T]:
        """Objects in name order."""
        return [self._items[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
