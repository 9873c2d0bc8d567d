"""The one registry type behind every extension point (ops, spaces, relaxations, strategies, evaluators)."""

from __future__ import annotations

from typing import Any

from jaxnas.errors import unknown


class Registry(dict):
    """Names to registered extensions of one kind; a dict, plus registration and a lookup whose
    unknown name is the standard one-line error listing what is registered."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def add(self, name: str, value: Any) -> Any:
        """Register ``value`` as ``name`` (a name is registered once)."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = value
        return value

    def lookup(self, name: str) -> Any:
        if name not in self:
            raise unknown(self.kind, name, self)
        return self[name]
