"""SNAS's concrete (Gumbel-softmax) relaxation (Xie et al., ICLR 2019, Eq. 3; SNAS-Series/SNAS)."""

from __future__ import annotations

from collections.abc import Mapping

import jax

from jaxnas.relaxations.registry import register_relaxation


@register_relaxation("gumbel_soft")
def gumbel_soft(alphas: jax.Array, key: jax.Array | None, hyper: Mapping) -> jax.Array:
    """The concrete distribution (SNAS Eq. 3): ``softmax((alpha + g) / tau)``, g ~ Gumbel(0, 1), a soft
    sample per edge. Without a key, softmax(alpha)."""
    if key is None:
        return jax.nn.softmax(alphas, -1)
    tau = hyper.get("tau", 1.0)
    return jax.nn.softmax((alphas + jax.random.gumbel(key, alphas.shape, alphas.dtype)) / tau, -1)
