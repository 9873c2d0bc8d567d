"""DrNAS's Dirichlet relaxation (Chen et al., ICLR 2021, Eq. 3; xiangning-chen/DrNAS
``utils.py::process_step_vector``: ``Dirichlet(ELU(theta) + 1).rsample()`` on every forward pass)."""

from __future__ import annotations

from collections.abc import Mapping

import jax

from jaxnas.relaxations.registry import register_relaxation


def concentration(alphas: jax.Array) -> jax.Array:
    """DrNAS's Dirichlet concentration ``ELU(theta) + 1`` (positive for every theta)."""
    return jax.nn.elu(alphas) + 1.0


@register_relaxation("dirichlet")
def dirichlet(alphas: jax.Array, key: jax.Array | None, hyper: Mapping) -> jax.Array:
    """A Dirichlet sample per edge with a pathwise gradient (DrNAS Eq. 3; ``jax.random.dirichlet`` is
    differentiable in its concentration by implicit reparameterization). Without a key, the mean."""
    conc = concentration(alphas)
    if key is None:
        return conc / conc.sum(-1, keepdims=True)
    return jax.random.dirichlet(key, conc)
