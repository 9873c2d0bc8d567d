"""A search space is one object: register a ``Space`` subclass and every part of jaxnas can use it.

A space offers (override what it has):

* ``defaults()``: its config fields and their defaults (the ``space`` group besides ``name``), and
  ``ranges()``: the allowed range of each numeric one;
* ``supernet(cfg, in_shape, num_classes, rngs)``: a module whose architecture parameters are
  ``jaxnas.nn.ArchParam`` variables and which has ``genotype()`` (gradient-based search);
* ``discrete(cfg, in_shape)``: a ``DiscreteSpace`` (random, greedy, evolution, weight sharing);
* ``arch_from_dict(d)``: an architecture from its JSON form (``genotype.json``, logs);
* ``drawings(arch)``: the architecture as (file stem, title, (source, target, label) edges);
* ``edge_names(key, n)``: labels of the rows of the alpha matrix ``key``, for plots;
* ``weight_sharing(space, cfg, ds, tx)``: its weight-sharing supernet, for ``rsws`` and
  the ``supernet`` evaluator (default: the supernet with one-hot alphas).
"""

from __future__ import annotations

from typing import Any

import ml_collections
from flax import nnx

from jaxnas import kernels as kernel_lib
from jaxnas.errors import JaxnasError
from jaxnas.registry import Registry
from jaxnas.spaces.base import Arch, DiscreteSpace
from jaxnas.spaces.weight_sharing import onehot_supernet


class Space:
    """Base of every search space; ``name`` is set by ``register_space``."""

    name = ""
    needs_input_shape = False  # the discrete form depends on the input shape (the chain space)

    def defaults(self) -> ml_collections.ConfigDict:
        """The space's config fields (besides ``name``) with their defaults."""
        return ml_collections.ConfigDict()

    def ranges(self) -> dict[str, tuple]:
        """The allowed (lowest, highest) of each numeric field of ``defaults()``, checked when a config is read."""
        return {}

    def fields(self, space_cfg) -> ml_collections.ConfigDict:
        """``space_cfg`` completed with this space's defaults, without the fields of other spaces."""
        out = self.defaults()
        for key in out.keys():
            if space_cfg is not None and key in space_cfg:
                out[key] = space_cfg[key]
        return out

    def supernet(self, cfg, in_shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
        with_one = [n for n, s in SPACES.items() if type(s).supernet is not Space.supernet]
        raise JaxnasError(f"space {self.name!r} has no supernet for gradient-based search; "
                          f"spaces with one: {', '.join(with_one)}")

    def discrete(self, cfg, in_shape: tuple[int, ...] | None = None) -> DiscreteSpace:
        with_one = [n for n, s in SPACES.items() if type(s).discrete is not Space.discrete]
        raise JaxnasError(f"space {self.name!r} has no discrete form; spaces with one: {', '.join(with_one)}")

    def arch_from_dict(self, d: dict) -> Arch:
        """An architecture from the JSON object its ``to_dict`` (or the discrete driver) wrote."""
        if isinstance(d, dict) and "arch" in d:
            return self.discrete(None).decode(d["arch"])
        raise JaxnasError(f"space {self.name!r}: cannot read an architecture from {d!r}")

    def drawings(self, arch: Arch) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
        """Figures of ``arch``: (file stem, title, edges as (source, target, op label))."""
        return []

    def edge_names(self, key: str, n: int) -> list[str]:
        """Labels of the n rows of the alpha matrix ``key`` (plots of the alphas over epochs)."""
        return [f"edge {e}" for e in range(n)]

    def weight_sharing(self, space: DiscreteSpace, cfg, ds, tx) -> tuple[Any, Any, Any]:
        """``(state, step(state, arch, batch) -> (state, loss), accuracy(state, arch, batch))`` of a
        weight-sharing supernet: by default this space's supernet with one-hot alphas."""
        return onehot_supernet(self, space, cfg, ds, tx)


SPACES: Registry = Registry("space")


def register_space(name: str):
    """Class decorator: register a ``Space`` subclass (instantiated once) under ``name``."""

    def wrap(cls: type[Space]) -> type[Space]:
        if not (isinstance(cls, type) and issubclass(cls, Space)):
            raise TypeError(f"register_space({name!r}) decorates a jaxnas.spaces.Space subclass, got {cls!r}")
        space = cls()
        space.name = name
        SPACES.add(name, space)
        return cls

    return wrap


def get_space(name: str) -> Space:
    return SPACES.lookup(name)


def build_supernet(space_cfg, in_shape, num_classes: int, rngs: nnx.Rngs, *, kernels: str | None = None,
                   platform: str | None = None) -> nnx.Module:
    """The supernet of the space named ``space_cfg.name``, its modules built with kernel implementation
    ``kernels`` (``run.kernels``; None: the current ``jaxnas.kernels.use`` setting) for backend
    ``platform``; ``model.kernels`` is the resolved name."""
    space = get_space(space_cfg.name)
    return kernel_lib.build_with(
        lambda: space.supernet(space.fields(space_cfg), tuple(in_shape), num_classes, rngs), kernels, platform)


def build_network(space: DiscreteSpace, arch: Arch, in_shape, num_classes: int, rngs: nnx.Rngs, *,
                  kernels: str | None = None, platform: str | None = None) -> nnx.Module:
    """The discrete network of ``arch`` in ``space`` (``DiscreteSpace.build``), built with kernel
    implementation ``kernels`` for backend ``platform`` as ``build_supernet`` is."""
    return kernel_lib.build_with(lambda: space.build(arch, tuple(in_shape), num_classes, rngs), kernels, platform)


def discrete_space(space_cfg, in_shape=None) -> DiscreteSpace:
    """The ``DiscreteSpace`` of the space named ``space_cfg.name`` (some need the input shape)."""
    space = get_space(space_cfg.name)
    return space.discrete(space.fields(space_cfg), in_shape)
