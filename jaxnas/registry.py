"""The one registry type behind every extension point (ops, spaces, relaxations, strategies, evaluators)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any

from jaxnas.errors import unknown


def import_registrations(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__path__``) except ``registry`` and those starting with
    ``_``: a package whose files each register one extension, so a new one is one new file."""
    for name in sorted(m.name for m in pkgutil.iter_modules(path)):
        if not name.startswith("_") and name != "registry":
            importlib.import_module(f"{package}.{name}")


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
