"""Search-space registry: one entry per space, with what the space offers.

* ``supernet(space_cfg, in_shape, num_classes, rngs)``: a module whose alphas are
  ``ArchParam`` variables and which has ``genotype()`` (for gradient-based search);
* ``discrete(space_cfg)``: a ``DiscreteSpace`` (see ``jaxnas/spaces/base.py``) that
  samples, mutates and enumerates architectures and builds their networks (for
  random, greedy and evolutionary search).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxnas.errors import JaxnasError, unknown


@dataclasses.dataclass
class SpaceSpec:
    name: str
    supernet: Callable | None = None
    discrete: Callable | None = None


SPACES: dict[str, SpaceSpec] = {}


def _spec(name: str) -> SpaceSpec:
    return SPACES.setdefault(name, SpaceSpec(name))


def register_space(name: str):
    """Decorator registering ``build(space_cfg, in_shape, num_classes, rngs) -> supernet``."""

    def wrap(fn):
        _spec(name).supernet = fn
        return fn

    return wrap


def register_discrete_space(name: str):
    """Decorator registering a ``DiscreteSpace`` class, built as ``cls(space_cfg)``."""

    def wrap(cls):
        _spec(name).discrete = cls
        return cls

    return wrap


def build_supernet(space_cfg, in_shape, num_classes: int, rngs):
    """Build the supernet of the space named ``space_cfg.name``."""
    if space_cfg.name not in SPACES:
        raise unknown("space", space_cfg.name, SPACES)
    spec = SPACES[space_cfg.name]
    if spec.supernet is None:
        with_supernet = [n for n, s in SPACES.items() if s.supernet]
        raise JaxnasError(f"space {space_cfg.name!r} has no supernet for gradient-based search; "
                          f"spaces with one: {', '.join(with_supernet)}")
    return spec.supernet(space_cfg, in_shape, num_classes, rngs)


def discrete_space(space_cfg, in_shape=None):
    """The ``DiscreteSpace`` of the space named ``space_cfg.name`` (some need the input shape)."""
    if space_cfg.name not in SPACES:
        raise unknown("space", space_cfg.name, SPACES)
    spec = SPACES[space_cfg.name]
    if spec.discrete is None:
        raise JaxnasError(f"space {space_cfg.name!r} has no discrete form; "
                          f"spaces with one: {', '.join(n for n, s in SPACES.items() if s.discrete)}")
    return spec.discrete(space_cfg, in_shape)


from jaxnas.spaces import darts, nb201, chain  # noqa: E402,F401  (register the built-in spaces)
