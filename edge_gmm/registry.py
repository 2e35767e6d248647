"""Register by name, build with one factory (STYLE.md #2)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from edge_gmm.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of builders. `reg.register("name")` decorates; `reg.get("name")` looks up."""

    def __init__(self, what: str):
        self.what = what
        self._table: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._table:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._table[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._table[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.what} {name!r}; choose one of: {', '.join(sorted(self._table))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table
