"""The op registry: every candidate operation is registered once by name, with its batched form.

An op maps an NHWC tensor with C channels to one with C channels, subsampled by ``stride``.
``factory(C, stride, affine, rngs)`` builds it for one edge (the discrete networks, and the
reference form of a supernet edge). ``batched(E, C, stride, bn, rngs)``, optional, builds it
for the E edges of a supernet that read one state: a module mapping x (N, H, W, C) to
(N, H', W', E, C), or to (N, H', W', 1, C) when every edge computes the same thing (pooling),
with the trailing non-affine BN included when ``bn`` is true. An op without a batched form
runs per edge. ``zero=True`` marks an op whose output is always zero (``none``), which mixed
ops skip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from flax import nnx

from jaxnas.errors import unknown
from jaxnas.registry import Registry

OpFactory = Callable[..., nnx.Module]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """A registered op. ``bn_in_search``: the search network's mixed op appends a non-affine BN
    (DARTS does this for the pooling ops)."""

    name: str
    factory: OpFactory
    bn_in_search: bool = False
    batched: OpFactory | None = None
    zero: bool = False


OPS: Registry = Registry("op")


def register_op(name: str, *, bn_in_search: bool = False, batched: OpFactory | None = None, zero: bool = False):
    """Decorator registering ``factory(C, stride, affine, rngs) -> nnx.Module`` as op ``name``,
    optionally with its batched form ``batched(E, C, stride, bn, rngs)`` (see the module docstring)."""

    def wrap(factory: OpFactory) -> OpFactory:
        OPS.add(name, OpSpec(name, factory, bn_in_search, batched, zero))
        return factory

    return wrap


def get_op(name: str) -> OpSpec:
    return OPS.lookup(name)


DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # the benchmark's order
OP_SETS: dict[str, tuple[str, ...]] = {"darts": DARTS_OPS, "nb201": NB201_OPS}


def resolve_op_set(ops: str | Sequence[str]) -> tuple[str, ...]:
    """An op set by name (``'darts'``) or a comma-separated / explicit list of op names."""
    if isinstance(ops, str):
        if ops in OP_SETS:
            return OP_SETS[ops]
        names = tuple(n.strip() for n in ops.split(",") if n.strip())
        if len(names) < 2 and not (len(names) == 1 and names[0] in OPS):
            raise unknown("op set", ops, list(OP_SETS) + ["a comma-separated list of ops"])
    else:
        names = tuple(ops)
    if not names:
        raise unknown("op set", ops, list(OP_SETS))
    for n in names:
        get_op(n)
    if len(set(names)) != len(names):
        raise unknown("op set (duplicate ops)", ",".join(names), OPS)
    return names
