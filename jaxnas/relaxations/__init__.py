"""Relaxations: how a supernet turns architecture parameters into the weights of each edge's ops.

A relaxation is ``relax(alphas, key, hyper) -> weights``, alphas (edges, ops) to weights of the
same shape, registered by name with ``register_relaxation``; a space's supernet applies the
one named by ``space.relaxation``. ``key`` is a PRNG key for sampling relaxations (from the
search state, so resume and several devices draw the same); it is None when the network is
evaluated, and a relaxation then returns its deterministic weights. ``hyper`` maps the names
of the method's scheduled values (``tau``, ...; ``jaxnas.methods.schedules``) to scalars.

Two declarations travel with a relaxation:

* ``hard=True``: its weights are straight-through one-hot rows (GDAS). A mixed op then runs
  only the ops that some edge selected and lets each other op contribute its weight as a
  scalar, which is exactly 0 in value but passes the gradient on to every alpha (GDAS's
  ``hardwts[i]`` trick, ``search_cells.py::forward_gdas``).
* ``strengths(alphas) -> array``: the edge/op strengths the discretization ranks (numpy);
  softmax(alpha) by default, sigmoid(alpha) for FairDARTS.

Every relaxation lives here, one registration per file: ``softmax`` (DARTS), ``gumbel_hard``
(GDAS), ``gumbel_soft`` (SNAS), ``dirichlet`` (DrNAS), ``sigmoid`` (FairDARTS). A method names
the one it uses in its preset (``jaxnas.methods``); one of your own is a ``register_relaxation``
in a file of your own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np

from jaxnas.registry import Registry

Relaxation = Callable[[jax.Array, "jax.Array | None", Mapping], jax.Array]
RELAXATIONS: Registry = Registry("relaxation")


def softmax_np(a) -> np.ndarray:
    """softmax over the last axis in float64, returned as float32 (the discretization's strengths)."""
    a = np.asarray(a, np.float64)
    e = np.exp(a - a.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RelaxationSpec:
    name: str
    fn: Relaxation
    hard: bool = False
    strengths: Callable[[np.ndarray], np.ndarray] = softmax_np


def register_relaxation(name: str, *, hard: bool = False, strengths: Callable | None = None):
    """Decorator registering ``relax(alphas, key, hyper) -> weights`` as ``space.relaxation=<name>``."""

    def wrap(fn: Relaxation) -> Relaxation:
        RELAXATIONS.add(name, RelaxationSpec(name, fn, hard, strengths or softmax_np))
        return fn

    return wrap


def get_relaxation(name: str) -> RelaxationSpec:
    return RELAXATIONS.lookup(name)


def relax_all(name: str, alphas: dict[str, jax.Array], key: jax.Array | None,
              hyper: Mapping | None = None) -> dict[str, jax.Array]:
    """Apply relaxation ``name`` to several alpha matrices, each with its own key (None: no keys)."""
    fn = get_relaxation(name).fn
    hyper = {} if hyper is None else hyper
    keys = [None] * len(alphas) if key is None else list(jax.random.split(key, len(alphas)))
    return {k: fn(a, sub, hyper) for (k, a), sub in zip(sorted(alphas.items()), keys)}


from jaxnas.relaxations import softmax, gumbel_hard, gumbel_soft, dirichlet, sigmoid  # noqa: E402,F401,I001  (register the built-in ones)
