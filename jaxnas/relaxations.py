"""Relaxations: how a supernet turns architecture parameters into the weights of each edge's ops.

A relaxation is ``relax(alphas, key) -> weights``, alphas (edges, ops) to weights of the
same shape, registered by name with ``register_relaxation``; a space's supernet applies the
one named by ``space.relaxation``. ``key`` is a PRNG key for sampling relaxations (from the
search state, so resume and several devices draw the same); it is None when the network is
evaluated or discretized, and a relaxation then returns its deterministic weights.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxnas.registry import Registry

Relaxation = Callable[[jax.Array, "jax.Array | None"], jax.Array]
RELAXATIONS: Registry = Registry("relaxation")


def register_relaxation(name: str):
    """Decorator registering ``relax(alphas, key) -> weights`` as ``space.relaxation=<name>``."""

    return lambda fn: RELAXATIONS.add(name, fn)


def get_relaxation(name: str) -> Relaxation:
    return RELAXATIONS.lookup(name)


@register_relaxation("softmax")
def softmax(alphas: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """DARTS's continuous relaxation (Liu et al. 2019, Eq. 2): softmax over each edge's ops."""
    return jax.nn.softmax(alphas, axis=-1)


def relax_all(name: str, alphas: dict[str, jax.Array], key: jax.Array | None) -> dict[str, jax.Array]:
    """Apply relaxation ``name`` to several alpha matrices, each with its own key (None: no keys)."""
    fn = get_relaxation(name)
    keys = [None] * len(alphas) if key is None else list(jax.random.split(key, len(alphas)))
    return {k: fn(a, sub) for (k, a), sub in zip(sorted(alphas.items()), keys)}
