"""Search-space registry: a space is a function building its supernet from a config."""

from __future__ import annotations

from typing import Callable

from jaxnas.errors import unknown

SPACES: dict[str, Callable] = {}


def register_space(name: str):
    """Decorator registering ``build(space_cfg, in_shape, num_classes, rngs) -> supernet``."""

    def wrap(fn):
        SPACES[name] = fn
        return fn

    return wrap


def build_supernet(space_cfg, in_shape, num_classes: int, rngs):
    """Build the supernet of the space named ``space_cfg.name``."""
    if space_cfg.name not in SPACES:
        raise unknown("space", space_cfg.name, SPACES)
    return SPACES[space_cfg.name](space_cfg, in_shape, num_classes, rngs)


from jaxnas.spaces import darts  # noqa: E402,F401  (registers 'darts')
