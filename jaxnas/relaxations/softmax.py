"""DARTS's continuous relaxation (Liu et al. 2019, Eq. 2; cnn/model_search.py ``F.softmax(alphas, dim=-1)``)."""

from __future__ import annotations

from collections.abc import Mapping

import jax

from jaxnas.relaxations.registry import register_relaxation


@register_relaxation("softmax")
def softmax(alphas: jax.Array, key: jax.Array | None = None, hyper: Mapping | None = None) -> jax.Array:
    """DARTS's continuous relaxation (Liu et al. 2019, Eq. 2): softmax over each edge's ops."""
    return jax.nn.softmax(alphas, axis=-1)
